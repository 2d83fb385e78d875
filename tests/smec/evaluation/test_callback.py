from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from smec.evaluation.callback import RetrievalEvalCallback, target_dims
from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.grid import GridWarning, evaluate_system
from smec.evaluation.spec import EvaluationSpec

D, D_MAX = 24, 16


def _eval_data(n_docs: int = 200):
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((n_docs, D)).astype(np.float32)
    rel = rng.integers(0, n_docs, 25)
    queries = corpus[rel] + 0.8 * rng.standard_normal((25, D)).astype(np.float32)
    qids, cids = [f"q{i}" for i in range(25)], [f"d{j}" for j in range(n_docs)]
    return SimpleNamespace(
        queries=queries,
        corpus=corpus,
        query_ids=qids,
        corpus_ids=cids,
        qrels={qids[i]: {cids[rel[i]]: 1} for i in range(25)},
        input_dim=D,
    )


class TinySystem(pl.LightningModule):
    eval_dims = (8, 16)

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(D, D_MAX, bias=False)

    def compress(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return (self.proj(x) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.log("val/loss", (self.proj(x) ** 2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


class FakeData(pl.LightningDataModule):
    def __init__(self, n_docs: int = 200):
        super().__init__()
        self.data = _eval_data(n_docs)
        self.calls = []

    def _loader(self):
        ds = torch.utils.data.TensorDataset(torch.from_numpy(self.data.corpus))
        return torch.utils.data.DataLoader(ds, batch_size=32)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def eval_data(self, split):
        self.calls.append(split)
        return self.data


def _trainer(callbacks, epochs=1, checkpoint=False, tmp_path=None):
    return pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=checkpoint,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )


def test_logs_the_evaluator_grid_and_skips_the_sanity_check():
    cb = RetrievalEvalCallback(EvaluationSpec(dims=(8, 16), precisions=("float32", "int8"), k=50))
    model, dm = TinySystem(), FakeData()
    trainer = _trainer([cb])
    trainer.fit(model, datamodule=dm)
    assert dm.calls == ["dev"]  # once: not during the sanity check
    metrics = trainer.callback_metrics
    for dim in (8, 16):
        for prec in ("float32", "int8"):
            assert f"val/ndcg@10/d{dim}/{prec}" in metrics and f"val/recall@50/d{dim}/{prec}" in metrics
    # Same numbers as running the evaluator directly on the compressed arrays.
    with torch.no_grad():
        q = model.compress(torch.from_numpy(dm.data.queries)).numpy()
        c = model.compress(torch.from_numpy(dm.data.corpus)).numpy()
    ev = RetrievalEvaluator(dm.data.qrels, dm.data.query_ids, dm.data.corpus_ids, input_dim=D, k=50)
    (row,) = ev.evaluate("x", q, c, dims=[16], precisions=("int8",))
    assert float(metrics["val/ndcg@10/d16/int8"]) == pytest.approx(row["ndcg@10"], abs=1e-6)
    assert cb.last_rows[0]["compression"] == 32 * D / (32 * 8)
    assert float(metrics["val/ndcg@10/mean"]) == pytest.approx(
        np.mean([float(metrics[f"val/ndcg@10/d{d}/float32"]) for d in (8, 16)])
    )


def test_the_evaluator_is_the_specs_with_its_calibration_sample():
    """Quantisers are fitted on the spec's calibration sample, as in the test grid (not on the whole corpus)."""
    spec = EvaluationSpec(precisions=("int4",), calibration_size=40, seed=3, k=20)
    cb = RetrievalEvalCallback(spec)
    model, dm = TinySystem(), FakeData(n_docs=300)
    _trainer([cb]).fit(model, datamodule=dm)
    assert cb._evaluator.settings == spec.evaluator_settings()
    with torch.no_grad():
        q = model.compress(torch.from_numpy(dm.data.queries)).numpy()
        c = model.compress(torch.from_numpy(dm.data.corpus)).numpy()
    data = dm.data
    ours = spec.evaluator(data.qrels, data.query_ids, data.corpus_ids, D).evaluate(
        "val", q, c, [8, 16], ["int4"]
    )
    whole = EvaluationSpec(precisions=("int4",), calibration_size=None, k=20)
    other = whole.evaluator(data.qrels, data.query_ids, data.corpus_ids, D).evaluate(
        "val", q, c, [8, 16], ["int4"]
    )
    assert [r["per_query"]["ndcg@10"].tolist() for r in cb.last_rows] == [
        r["per_query"]["ndcg@10"].tolist() for r in ours
    ]
    assert [r["per_query"]["ndcg@10"].tolist() for r in ours] != [
        r["per_query"]["ndcg@10"].tolist() for r in other
    ]  # the sample matters here, so equality above is the sample's


def test_mean_dims_every_n_epochs_and_checkpoint_monitoring(tmp_path):
    cb = RetrievalEvalCallback(EvaluationSpec(precisions=("binary",), k=20), every_n_epochs=2, mean_dims=[8])
    # A monitoring checkpoint must run on the same epochs as the evaluation (Lightning raises on a missing
    # key).
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val/ndcg@10/mean", mode="max", every_n_epochs=2)
    dm = FakeData()
    trainer = _trainer([cb, ckpt], epochs=2, checkpoint=True, tmp_path=tmp_path)
    trainer.fit(TinySystem(), datamodule=dm)
    assert dm.calls == ["dev"]  # epoch 2 only
    assert {r["dim"] for r in cb.last_rows} == {8, 16}  # the model's eval_dims
    assert ckpt.best_model_score is not None
    assert float(ckpt.best_model_score) == pytest.approx(
        next(r["ndcg@10"] for r in cb.last_rows if r["dim"] == 8)
    )


def test_errors():
    with pytest.raises(EvaluationError, match="every_n_epochs must be >= 1, got 0"):
        RetrievalEvalCallback(every_n_epochs=0)
    with pytest.raises(EvaluationError, match=r"mean_dims must name at least one dim"):
        RetrievalEvalCallback(mean_dims=[])
    cb = RetrievalEvalCallback(mean_dims=[4])
    with pytest.raises(EvaluationError, match=r"mean_dims \[4\] are not among the evaluated dims \[8, 16\]"):
        _trainer([cb]).fit(TinySystem(), datamodule=FakeData())


@pytest.mark.parametrize("prefix_nested", [True, False], ids=["prefixes", "per-size"])
def test_binary_at_sizes_that_are_not_whole_bytes_is_one_warning(prefix_nested):
    class Module(TinySystem):
        def embed(self, x, dim):
            return self.proj(x)[:, :dim]

    module = Module()
    module.prefix_nested = prefix_nested
    data = _eval_data()
    ev = RetrievalEvaluator(data.qrels, data.query_ids, data.corpus_ids, input_dim=D, k=20)
    with pytest.warns(GridWarning) as caught:
        rows = evaluate_system(module, data.queries, data.corpus, ev, [4, 8, 12], ("float32", "binary"), "m")
    assert [str(w.message) for w in caught] == [
        "left out of the grid: m binary at dims [4, 12] (binary codes need a multiple of 8 dims)"
    ]
    assert sorted((r["dim"], r["precision"]) for r in rows) == [
        (4, "float32"),
        (8, "binary"),
        (8, "float32"),
        (12, "float32"),
    ]


class WideSystem(TinySystem):
    """Evaluated at 8 and at its input width 16 (as SMEC's chain starts at D): 16 is not a target size."""

    input_dim = D_MAX


class NotYetSelectable(TinySystem):
    """A system that has trained only size 16 so far and cannot be selected yet (SMRL before its last stage)."""

    selectable = False
    available_dims = (16,)


def test_the_monitor_is_the_mean_over_the_target_sizes_and_ignores_the_input_width():
    cb = RetrievalEvalCallback(EvaluationSpec(precisions=("float32",), k=20))
    trainer = _trainer([cb])
    trainer.fit(WideSystem(), datamodule=FakeData())
    metrics = trainer.callback_metrics
    assert {r["dim"] for r in cb.last_rows} == {8, 16}  # both evaluated and logged …
    assert float(metrics["val/ndcg@10/d16/float32"]) != float(metrics["val/ndcg@10/d8/float32"])
    # … but the monitor averages the sizes below the input width only.
    assert float(metrics["val/ndcg@10/mean"]) == float(metrics["val/ndcg@10/d8/float32"])
    assert target_dims(WideSystem(), [8, 16]) == [8] and target_dims(TinySystem(), [8, 16]) == [8, 16]
    assert target_dims(WideSystem(), [16]) == [16]  # nothing below the width: the evaluated sizes


def test_a_system_that_cannot_be_selected_yet_logs_minus_inf_and_evaluates_only_trained_sizes(tmp_path):
    cb = RetrievalEvalCallback(EvaluationSpec(precisions=("float32",), k=20))
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val/ndcg@10/mean", mode="max")
    trainer = _trainer([cb, ckpt], checkpoint=True, tmp_path=tmp_path)
    trainer.fit(NotYetSelectable(), datamodule=FakeData())
    assert {r["dim"] for r in cb.last_rows} == {16}  # size 8 is not trained: not evaluated
    assert float(trainer.callback_metrics["val/ndcg@10/mean"]) == -np.inf
    assert "val/ndcg@10/d8/float32" not in trainer.callback_metrics

import re
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml

from datamodules.embedding import EmbeddingDataModule
from smec.errors import ConfigError
from smec.losses.matryoshka import MatryoshkaSimilarityLoss
from smec.systems.adaptors import MatryoshkaAdaptorModule, SearchAdaptorModule, default_dims

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def trainer(epochs, **kw):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


def datamodule(store, mode, batch_size=16):
    return EmbeddingDataModule(str(store), mode=mode, batch_size=batch_size, block_rows=32)


def train_pairs(store):
    """All train (query, relevant document) inputs of the tiny store: query i ↔ document 7i mod 100."""
    data = datamodule(store, "supervised").eval_data("train")
    docs = [data.corpus_ids.index(next(iter(data.qrels[q]))) for q in data.query_ids]
    return torch.from_numpy(data.queries), torch.from_numpy(data.corpus[docs]), torch.from_numpy(data.corpus)


class Recorder(L.Callback):
    """Per epoch: the stage buffer, the optimizer object and its lr, as seen by the first training batch."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            opt = trainer.optimizers[0]
            self.seen[trainer.current_epoch] = (int(pl_module.stage), opt.param_groups[0]["lr"], id(opt))


def test_default_dims():
    assert default_dims(384) == [32, 64, 128, 256, 384]
    assert default_dims(512) == [32, 64, 128, 256, 512]
    assert default_dims(10) == [10]


@pytest.mark.parametrize("cls", [MatryoshkaAdaptorModule, SearchAdaptorModule])
def test_the_adaptor_is_the_identity_at_init(cls):
    torch.manual_seed(0)
    model = cls(input_dim=10, eval_dims=[4, 10])
    x = torch.randn(7, 10)
    assert torch.equal(model.compress(x), x)
    assert torch.equal(model.embed(x, 4), x[:, :4])
    assert model.output_dim == 10 and model.eval_dims == (4, 10) and not hasattr(model, "index_sets")
    assert model.reconstruction(x).item() == 0.0


@pytest.mark.parametrize(("unsupervised_epochs", "epochs", "switch"), [(1, 3, 1), (None, 4, 2)])
def test_the_stage_switches_at_the_configured_epoch_with_a_rebuilt_scaled_optimizer(
    tiny_store, unsupervised_epochs, epochs, switch
):
    torch.manual_seed(0)
    model = MatryoshkaAdaptorModule(
        input_dim=10,
        dims=[4, 10],
        topk=3,
        unsupervised_epochs=unsupervised_epochs,
        lr=1e-2,
        stage2_lr_scale=0.25,
    )
    recorder = Recorder()
    t = trainer(epochs, callbacks=[recorder], limit_train_batches=2, limit_val_batches=1)
    t.fit(model, datamodule=datamodule(tiny_store, "both"))
    stages = [recorder.seen[e][0] for e in range(epochs)]
    assert stages == [1] * switch + [2] * (epochs - switch)
    lrs = [recorder.seen[e][1] for e in range(epochs)]
    assert lrs == pytest.approx([1e-2] * switch + [2.5e-3] * (epochs - switch))
    optimizers = [recorder.seen[e][2] for e in range(epochs)]
    assert optimizers[switch - 1] != optimizers[switch] == optimizers[-1]
    assert "train/rank" in t.callback_metrics and t.callback_metrics["train/stage"] == 2.0
    assert {"train/topk", "train/pair", "train/reconstruction", "val/loss", "val/loss/d4"} <= set(
        t.callback_metrics
    )


def test_resume_keeps_the_stage_and_the_scaled_lr(tiny_store, tmp_path):
    torch.manual_seed(0)
    kw = dict(input_dim=10, dims=[4, 10], topk=3, unsupervised_epochs=1, lr=1e-2)
    model = MatryoshkaAdaptorModule(**kw)
    t = trainer(2, limit_train_batches=2, limit_val_batches=1)
    t.fit(model, datamodule=datamodule(tiny_store, "both"))
    assert int(model.stage) == 2 and "stage" in model.state_dict()
    ckpt = tmp_path / "stage2.ckpt"
    t.save_checkpoint(ckpt)

    resumed, recorder = MatryoshkaAdaptorModule(**kw), Recorder()
    t2 = trainer(3, callbacks=[recorder], limit_train_batches=2, limit_val_batches=1)
    t2.fit(resumed, datamodule=datamodule(tiny_store, "both"), ckpt_path=str(ckpt))
    assert recorder.seen[2][:2] == (2, pytest.approx(1e-3))


def test_search_adaptor_lowers_the_rank_loss_and_moves_away_from_the_identity(tiny_store):
    # The tiny store's inputs are nearly collinear (column 0 of each model holds the row index), so separating
    # its pairs is slow: a sharper rank loss (τ = 0.1), a wider g and a high lr make 8 epochs show it.
    torch.manual_seed(0)
    model = SearchAdaptorModule(input_dim=10, hidden_dim=32, temperature=0.1, eval_dims=[4, 10], lr=3e-2)
    q, d, corpus = train_pairs(tiny_store)

    def rank_loss():
        with torch.no_grad():
            return model.rank_loss(
                F.normalize(model.compress(q), dim=-1), F.normalize(model.compress(d), dim=-1)
            )

    before = rank_loss().loss.item()
    assert model.reconstruction(corpus).item() == 0.0
    t = trainer(8, limit_val_batches=1)
    t.fit(model, datamodule=datamodule(tiny_store, "supervised"))
    model.eval()
    assert rank_loss().loss.item() < 0.95 * before
    assert model.reconstruction(corpus).item() > 0.0
    assert {"train/loss_epoch", "train/rank", "train/reconstruction", "val/reconstruction"} <= set(
        t.callback_metrics
    )


def test_matryoshka_adaptor_supervised_stage_lowers_the_nested_rank_loss(tiny_store):
    torch.manual_seed(0)
    # As above, settings that make the slow tiny-store task visible; unsupervised_epochs=0: stage 2 from the start.
    model = MatryoshkaAdaptorModule(
        input_dim=10,
        hidden_dim=32,
        dims=[4, 10],
        topk=3,
        temperature=0.1,
        unsupervised_epochs=0,
        lr=3e-2,
        stage2_lr_scale=1.0,
    )
    q, d, corpus = train_pairs(tiny_store)

    def losses():
        with torch.no_grad():
            pairs = {
                m: (
                    F.normalize(model.compress(q)[:, :m], dim=-1),
                    F.normalize(model.compress(d)[:, :m], dim=-1),
                )
                for m in (4, 10)
            }
            return model.rank_loss(pairs).loss.item(), model.sim_loss(model.compress(corpus), corpus)

    rank_before, sim = losses()
    assert sim.terms["reconstruction"].item() == 0.0
    t = trainer(4, limit_train_batches=4, limit_val_batches=1)
    t.fit(model, datamodule=datamodule(tiny_store, "both"))
    model.eval()
    rank_after, sim = losses()
    assert rank_after < 0.95 * rank_before
    assert sim.terms["reconstruction"].item() > 0.0


@pytest.mark.parametrize(
    ("cls", "mode", "message"),
    [
        (
            MatryoshkaAdaptorModule,
            "supervised",
            "model: matryoshka-adaptor trains on corpus rows and query-document pairs and needs data.mode: both, "
            "got 'supervised' (set model.rank_weight: 0 for the unsupervised-only adaptor)",
        ),
        (
            SearchAdaptorModule,
            "unsupervised",
            "model: search-adaptor trains on data.mode: supervised or both, got 'unsupervised'",
        ),
    ],
)
def test_a_data_mode_without_the_needed_batches_fails_before_training(tiny_store, cls, mode, message):
    model = cls(input_dim=10, eval_dims=[10])
    with pytest.raises(ConfigError, match=re.escape(message)):
        trainer(1).fit(model, datamodule=datamodule(tiny_store, mode))


def test_unsupervised_only_adaptor_accepts_row_batches(tiny_store):
    model = MatryoshkaAdaptorModule(input_dim=10, dims=[4, 10], topk=3, rank_weight=0, unsupervised_epochs=1)
    t = trainer(2, limit_train_batches=1, limit_val_batches=1)
    t.fit(model, datamodule=datamodule(tiny_store, "unsupervised"))
    assert int(model.stage) == 2 and "train/rank" not in t.callback_metrics


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (
            MatryoshkaAdaptorModule,
            {"dims": [4, 16]},
            "model.dims must all be <= input_dim=10 (the adaptor keeps the input width), got [4, 16]",
        ),
        (MatryoshkaAdaptorModule, {"dims": [8, 4]}, "model.dims must be sorted ascending, got [8, 4]"),
        (
            MatryoshkaAdaptorModule,
            {"eval_dims": [4, 12]},
            "model.eval_dims must all be <= input_dim=10 (the adaptor keeps the input width), got [4, 12]",
        ),
        (
            MatryoshkaAdaptorModule,
            {"dims": [4, 10], "eval_dims": [4, 8]},
            "model.eval_dims [4, 8]: matryoshka-adaptor cannot produce the size(s) [8] exactly; it produces its "
            "trained prefix sizes model.dims [4, 10]",
        ),
        (
            MatryoshkaAdaptorModule,
            {"dims": [4, 10], "weights": [1.0]},
            "model.weights must have one entry per dim (2), got [1.0]",
        ),
        (
            MatryoshkaAdaptorModule,
            {"unsupervised_epochs": -1},
            "model.unsupervised_epochs must be an integer >= 0, got -1",
        ),
        (
            MatryoshkaAdaptorModule,
            {"stage2_lr_scale": 0},
            "model.stage2_lr_scale must be a number > 0, got 0",
        ),
        (MatryoshkaAdaptorModule, {"rank_weight": -1.0}, "model.rank_weight must be a number >= 0, got -1.0"),
        (MatryoshkaAdaptorModule, {"pair_weight": -1.0}, "model.pair_weight must be a number >= 0, got -1.0"),
        (MatryoshkaAdaptorModule, {"topk": -2}, "model.topk must be an integer >= 0, got -2"),
        (MatryoshkaAdaptorModule, {"distance": "l2"}, "model.distance must be one of mse, l1, got 'l2'"),
        (
            MatryoshkaAdaptorModule,
            {"neighbours": "memory"},
            "model.neighbours must be one of corpus, batch, got 'memory'",
        ),
        (MatryoshkaAdaptorModule, {"temperature": 0.0}, "model.temperature must be a number > 0, got 0.0"),
        (MatryoshkaAdaptorModule, {"hidden_dim": 0}, "model.hidden_dim must be a positive integer, got 0"),
        (
            SearchAdaptorModule,
            {"eval_dims": [4, 16]},
            "model.eval_dims must all be <= input_dim=10 (the adaptor keeps the input width), got [4, 16]",
        ),
        (
            SearchAdaptorModule,
            {"reconstruction_weight": -0.5},
            "model.reconstruction_weight must be a number >= 0, got -0.5",
        ),
        (SearchAdaptorModule, {"lr": 0}, "model.lr must be a number > 0, got 0"),
        (
            SearchAdaptorModule,
            {"prediction_weight": -1.0},
            "model.prediction_weight must be a number >= 0, got -1.0",
        ),
        (
            SearchAdaptorModule,
            {"predictor_hidden_dim": 0},
            "model.hidden_dim must be a positive integer, got 0",
        ),
        (SearchAdaptorModule, {"weight_decay": -1}, "model.weight_decay must be a number >= 0, got -1"),
        (SearchAdaptorModule, {"input_dim": 0}, "model.input_dim must be a positive int, got 0"),
        (
            SearchAdaptorModule,
            {"dims": [4, 12]},
            "model.dims must all be <= input_dim=10 (the adaptor keeps the input width), got [4, 12]",
        ),
    ],
)
def test_bad_config_names_the_key(cls, kwargs, message):
    kwargs = {"input_dim": 10, **kwargs}
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(**kwargs)


def test_unsupervised_epochs_needs_max_epochs(tiny_store):
    model = MatryoshkaAdaptorModule(input_dim=10, dims=[4, 10], topk=3)
    t = L.Trainer(
        max_epochs=-1,
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    message = "model.unsupervised_epochs must be set when trainer.max_epochs is not (it defaults to half of trainer.max_epochs)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        t.fit(model, datamodule=datamodule(tiny_store, "both"))


@pytest.mark.parametrize(
    ("recipe", "cls", "mode"),
    [
        ("matryoshka-adaptor.yaml", MatryoshkaAdaptorModule, "both"),
        ("search-adaptor.yaml", SearchAdaptorModule, "supervised"),
    ],
)
def test_recipes_build_the_model_and_match_its_data_mode(recipe, cls, mode):
    config = yaml.safe_load((CONFIGS / recipe).read_text())
    assert config["model"]["class_path"] == f"{cls.__module__}.{cls.__name__}"
    model = cls(input_dim=1152, **config["model"]["init_args"])  # the demo store's width
    assert config["data"]["init_args"]["mode"] == mode
    assert config["trainer"]["default_root_dir"] == f"runs/{model.method_name}"
    from smec.evaluation.spec import EvaluationSpec
    from smec.fit_callbacks import FitCallbacks

    spec = EvaluationSpec(**config.get("evaluation", {}))
    assert spec.dims is None  # the dev callback evaluates the model's eval_dims: every one <= D
    assert max(model.eval_dims) <= 384
    callbacks = {type(c).__name__: c for c in FitCallbacks(**config.get("fit_callbacks", {})).build(spec)}
    assert (
        callbacks["ModelCheckpoint"].monitor
        == callbacks["SelectableEarlyStopping"].monitor
        == "val/ndcg@10/mean"
    )


def test_the_dims_contract():
    # trained sizes: dims, else eval_dims, else the default; eval sizes: eval_dims, else the trained sizes
    assert MatryoshkaAdaptorModule(input_dim=64).dims == (32, 64)
    with pytest.warns(UserWarning, match=r"output_dim=64 is not in dims \[8, 16\]"):
        assert MatryoshkaAdaptorModule(input_dim=64, eval_dims=[8, 16]).dims == (8, 16)
    model = MatryoshkaAdaptorModule(input_dim=64, dims=[8, 16, 64])
    assert model.dims == (8, 16, 64) and model.eval_dims == (8, 16, 64)
    # Search-Adaptor trains nothing per size: dims is only the default of eval_dims, any prefix <= D is fine
    assert SearchAdaptorModule(input_dim=64).eval_dims == (32, 64)
    assert SearchAdaptorModule(input_dim=64, dims=[8, 24]).eval_dims == (8, 24)
    assert SearchAdaptorModule(input_dim=64, dims=[8, 24], eval_dims=[3, 40]).eval_dims == (3, 40)


# -- Matryoshka-Adaptor's corpus neighbours ------------------------------------------------------------------


def last_linear(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


def corpus_model(**kw):
    torch.manual_seed(0)
    return MatryoshkaAdaptorModule(input_dim=10, dims=[4, 10], topk=3, unsupervised_epochs=1, **kw)


def test_a_one_epoch_fit_loads_the_corpus_and_trains_l_topk_on_corpus_neighbours(tiny_store):
    model = corpus_model(rank_weight=0.0)
    t = trainer(1, limit_val_batches=1)
    t.fit(model, datamodule=datamodule(tiny_store, "unsupervised"))
    corpus = datamodule(tiny_store, "unsupervised").eval_data().corpus
    assert len(model._corpus) == len(corpus) == 100 and torch.equal(
        model._corpus.rows, torch.from_numpy(corpus)
    )
    assert t.global_step > 0 and torch.isfinite(t.callback_metrics["train/topk"])
    assert not any(
        k.startswith("_corpus") for k in model.state_dict()
    )  # rebuilt at setup, never checkpointed
    assert not torch.equal(model.compress(torch.from_numpy(corpus)), torch.from_numpy(corpus))


def test_corpus_neighbours_exclude_the_row_and_are_the_input_spaces_nearest(tiny_store):
    model = corpus_model()
    corpus = torch.from_numpy(datamodule(tiny_store, "unsupervised").eval_data().corpus)
    model.use_corpus(corpus)
    x = corpus[:16]
    pick = model._corpus_pick(x)
    found = pick.slots[pick.inverse]
    sims = F.normalize(x, dim=1) @ F.normalize(corpus, dim=1).T
    sims[torch.arange(16), torch.arange(16)] = -2.0  # the row itself is never its neighbour
    assert torch.equal(found, sims.topk(3, dim=1).indices)
    assert torch.equal(model._corpus_pick(x).inverse, pick.inverse)  # deterministic


def test_the_gradient_reaches_the_adaptor_through_the_neighbours_adapted_vectors(tiny_store):
    model = corpus_model(pair_weight=0.0, reconstruction_weight=0.0, rank_weight=0.0)
    corpus = torch.from_numpy(datamodule(tiny_store, "unsupervised").eval_data().corpus)
    model.use_corpus(corpus)
    with torch.no_grad():  # move off the identity, where every similarity error (and gradient) is 0
        last_linear(model.adaptor).weight.normal_(0.0, 0.3)
    x = corpus[:8]
    y, given, _ = model._adapt(x, None)
    y_neighbours = given[0]
    assert y_neighbours.requires_grad and len(y_neighbours) == len(model._corpus_pick(x).slots)
    # Only the neighbour side carries gradient: the rows' outputs are detached.
    loss = model.sim_loss(y.detach(), x, neighbours=given).loss
    loss.backward()
    grad = last_linear(model.adaptor).weight.grad
    assert grad is not None and torch.count_nonzero(grad) > 0
    # The term compares adapted with frozen similarities: by hand, at the 4-dim prefix and the full one.
    picked = y_neighbours[given[3]]
    expected = sum(
        (
            (F.normalize(y.detach()[:, :m], dim=1).unsqueeze(1) * F.normalize(picked[..., :m], dim=2)).sum(-1)
            - given[1]
        )
        .abs()
        .mean()
        for m in (4, 10)
    )
    torch.testing.assert_close(loss, expected)


def test_batch_neighbours_keep_the_earlier_in_batch_term(tiny_store):
    batch_model = corpus_model(neighbours="batch")
    x = torch.from_numpy(datamodule(tiny_store, "unsupervised").eval_data().corpus[:16])
    with torch.no_grad():
        last_linear(batch_model.adaptor).weight.normal_(0.0, 0.3)
    y, given, _ = batch_model._adapt(x, None)
    assert given is None and batch_model._corpus is None
    reference = MatryoshkaSimilarityLoss(
        [4, 10], output_dim=10, topk=3, topk_weight=1.0, reconstruction_weight=1.0, distance="l1"
    )
    torch.testing.assert_close(batch_model.sim_loss(y, x).loss, reference(y, x).loss)


def test_corpus_neighbours_without_a_corpus_fail_with_one_clear_message():
    model = corpus_model()
    with pytest.raises(ConfigError, match=re.escape("model.neighbours: corpus, but no corpus was loaded")):
        model.training_step({"x": torch.randn(8, 10)}, 0)


# -- Search-Adaptor's prediction term -----------------------------------------------------------------------


def test_the_prediction_term_joins_the_loss_and_weight_zero_is_the_old_objective(tiny_store):
    q, d, _ = train_pairs(tiny_store)
    batch = {"q": q[:8], "d": d[:8]}
    torch.manual_seed(0)
    old = SearchAdaptorModule(input_dim=10, prediction_weight=0.0)
    torch.manual_seed(0)
    new = SearchAdaptorModule(input_dim=10, prediction_weight=0.5)
    assert old.prediction is None and not any(k.startswith("prediction") for k in old.state_dict())
    assert any(k.startswith("prediction.predictor") for k in new.state_dict())
    # At init the adaptor and the predictor are the identity: L_pred = mean |d − q|.
    extra = new.training_step(batch, 0) - old.training_step(batch, 0)
    torch.testing.assert_close(extra, 0.5 * (d[:8] - q[:8]).abs().mean())
    assert new.compress(q).equal(q)  # the predictor is training-only: compress never calls it


def test_a_one_epoch_fit_of_the_search_adaptor_trains_the_predictor(tiny_store):
    torch.manual_seed(0)
    model = SearchAdaptorModule(input_dim=10, eval_dims=[4, 10], lr=1e-2)
    before = [p.detach().clone() for p in model.prediction.parameters()]
    t = trainer(1, limit_val_batches=1)
    t.fit(model, datamodule=datamodule(tiny_store, "supervised"))
    assert t.global_step > 0 and torch.isfinite(t.callback_metrics["train/prediction"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.prediction.parameters()))

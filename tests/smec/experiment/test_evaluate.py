"""The test grid of a comparison: a fit read from its fit_result.json, scored like its dev callback scored it."""

from __future__ import annotations

import json
from dataclasses import asdict

import lightning as L
import pytest

from datamodules.embedding import EmbeddingDataModule
from smec.evaluation.callback import RetrievalEvalCallback
from smec.evaluation.spec import EvaluationSpec
from smec.experiment.evaluate import TestGrid
from smec.fit_result import FIT_RESULT, FitResult
from smec.systems.mrl import MRLDecoderModule
from tests.conftest import build_store


def _strip(rows: list[dict]) -> list[tuple]:
    """What a row says about the retrieval (everything but its timing)."""
    keys = ("method", "dim", "precision", "bits", "scoring", "ndcg@10", "recall@100", "mrr@10")
    return [(*(r[k] for k in keys), *r["per_query"]["ndcg@10"].tolist()) for r in rows]


@pytest.mark.parametrize("split", ["dev", "test"])
def test_dev_and_test_evaluation_of_one_checkpoint_differ_only_in_the_split(tmp_path, split):
    """One spec, one checkpoint: the callback's rows on a split are the test grid's rows on that split.

    The calibration sample (60 of 100 corpus rows) is a real sample, so equal rows mean equal calibration.
    """
    store = build_store(tmp_path / "store")
    spec = EvaluationSpec(
        dims=(4, 8),
        precisions=("float32", "int8", "int4"),
        calibration_size=60,
        seed=1,
        codes=[{"name": "sq4-quantiles", "budgets": [4]}],
    )
    L.seed_everything(0)
    model = MRLDecoderModule(input_dim=10, output_dim=8, dims=[4, 8])
    callback = RetrievalEvalCallback(spec, split=split, method="mrl")
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.validate(model, datamodule=EmbeddingDataModule(str(store), batch_size=16))
    root = tmp_path / "fit"
    trainer.save_checkpoint(root / "checkpoints" / "best-00.ckpt")
    result = FitResult(
        checkpoint="checkpoints/best-00.ckpt",
        epoch=0,
        monitor="val/ndcg@10/mean",
        score=None,
        model_class="smec.systems.mrl.MRLDecoderModule",
        data={
            "store": str(store),
            "models": ["m1", "m2"],
            "normalization": "l2-concat-l2",
            "model_weights": None,
        },
    )
    (root / FIT_RESULT).write_text(json.dumps({"format": 1, **asdict(result)}))

    rows, read, input_dim = TestGrid(spec, split).rows(root, "mrl")
    assert read == result and input_dim == 10
    # The test grid adds the spec's codes on the system's output; the dev callback runs none (their cost).
    codes = [r for r in rows if r.get("code")]
    assert [(r["precision"], r["dim"], r["bytes"]) for r in codes] == [("sq4-quantiles", 8, 4)]
    assert _strip([r for r in rows if not r.get("code")]) == _strip(callback.last_rows)
    other = TestGrid(EvaluationSpec(dims=(4, 8), precisions=("int4",), calibration_size=None), split)
    assert _strip(other.rows(root, "mrl")[0]) != _strip([r for r in rows if r["precision"] == "int4"])

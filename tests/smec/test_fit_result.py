"""fit_result.json: what a finished `smec fit` selected, written by the fit, read by `smec compare`'s test grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from smec.errors import ConfigError
from smec.fit_result import FIT_RESULT, read_fit_result
from tests.conftest import build_store

REPO = Path(__file__).resolve().parents[2]


def tiny_mrl(tmp_path: Path, store: Path, **top: object) -> Path:
    """configs/mrl.yaml with its standard callbacks, shrunk for the tiny store: 3 epochs."""
    cfg = yaml.safe_load((REPO / "configs" / "mrl.yaml").read_text())
    cfg["model"]["init_args"].update(output_dim=8, dims=[2, 4, 8])
    cfg["data"]["init_args"].update(store=str(store), models=None, batch_size=8)
    cfg["trainer"].update(
        default_root_dir=str(tmp_path / "run"),
        max_epochs=3,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    cfg.update(top)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_finished_fit_records_its_dev_selected_checkpoint(tmp_path):
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    run_lightning_cli(["fit", "--config", str(tiny_mrl(tmp_path, store)), "--evaluation.calibration_size=40"])
    root = tmp_path / "run"
    result = read_fit_result(root)
    last = torch.load(root / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    selection = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint{"))
    assert (
        result.checkpoint == f"checkpoints/{Path(selection['best_model_path']).name}"
    )  # relative to the run
    best = torch.load(result.checkpoint_path(root), weights_only=False, map_location="cpu")
    assert (
        result.epoch == best["epoch"]
        and result.checkpoint == f"checkpoints/best-epoch={best['epoch']:02d}.ckpt"
    )
    assert result.score == pytest.approx(float(selection["best_model_score"]))
    assert result.monitor == "val/ndcg@10/mean"
    assert result.model_class == "smec.systems.mrl.MRLDecoderModule"
    assert result.data == {
        "store": str(store),
        "models": ["m1", "m2"],
        "normalization": "l2-concat-l2",
        "model_weights": None,
    }
    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert saved["evaluation"]["calibration_size"] == 40 and saved["fit_callbacks"]["patience"] == 8
    assert result.regime == "unsupervised" and saved["regime"] == "unsupervised"
    assert result.budget == {"optimizer_steps": last["global_step"], "epochs": 3}


def test_a_supervised_fit_names_its_regime_and_trains_on_mined_negatives(tmp_path):
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    overlay = REPO / "configs" / "regimes" / "supervised-mrl.yaml"
    recipe = tiny_mrl(tmp_path, store)
    # The tiny store has 100 documents: the overlay's ranks 2-31 fit.
    run_lightning_cli(["fit", "--config", str(recipe), "--config", str(overlay), "--trainer.max_epochs=1"])
    result = read_fit_result(tmp_path / "run")
    assert result.regime == "supervised" and result.budget["epochs"] == 1
    assert (store / "negatives").is_dir()  # mined once, cached beside the store
    metrics = (tmp_path / "run" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/rank" in metrics


def test_a_fit_result_that_cannot_be_used_is_one_line(tmp_path):
    root = tmp_path / "fit"
    root.mkdir()
    with pytest.raises(
        ConfigError, match=r"^test grid: \S+fit_result\.json is missing: the fit in \S+ did not"
    ):
        read_fit_result(root, "test grid")
    (root / FIT_RESULT).write_text("{")
    with pytest.raises(ConfigError, match=r"fit_result\.json is not valid JSON"):
        read_fit_result(root)
    (root / FIT_RESULT).write_text(json.dumps({"format": 1, "checkpoint": "x.ckpt"}))
    with pytest.raises(ConfigError, match=r"is not a fit result of format 1"):
        read_fit_result(root)
    good = {
        "format": 1,
        "checkpoint": "x.ckpt",
        "epoch": 0,
        "monitor": None,
        "score": None,
        "model_class": "m",
        "data": {},
    }
    (root / FIT_RESULT).write_text(json.dumps(good))
    with pytest.raises(ConfigError, match=r"its checkpoint \S+x\.ckpt does not exist"):
        read_fit_result(root)

"""`smec fit / predict` through the LightningCLI on a tiny store: resume after kill -9, W&B offline, predict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from datamodules.store import EmbeddingStore
from tests.conftest import build_store

REPO = Path(__file__).resolve().parents[2]


def recipe(tmp_path: Path, store: Path, *, epochs: int, logger: str = "csv", slow: bool = False) -> Path:
    """configs/mrl.yaml shrunk for a tiny store: small dims, checkpoints every epoch, no retrieval callback."""
    cfg = yaml.safe_load((REPO / "configs" / "mrl.yaml").read_text())
    cfg["model"]["init_args"].update(output_dim=8, dims=[2, 4, 8])
    cfg["data"]["init_args"].update(store=str(store), models=None, batch_size=8)
    cfg["trainer"].update(
        default_root_dir=str(tmp_path / "run"),
        max_epochs=epochs,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"save_last": True, "every_n_epochs": 1},
            }
        ],
    )
    if slow:  # a deterministic way to be killed mid-fit
        cfg["trainer"]["callbacks"].append({"class_path": "tests.smec.slow_callback.SlowEpochs"})
    if logger == "wandb":
        cfg["trainer"]["logger"] = {
            "class_path": "smec.loggers.SmecWandbLogger",
            "init_args": {"project": "smec-test", "group": "tiny"},
        }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def smec(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.Popen([sys.executable, "-m", "smec.cli", *args], cwd=REPO, env=env, text=True, **popen)


def test_fit_writes_config_checkpoints_and_metrics(tmp_path):
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    cli = run_lightning_cli(["fit", "--config", str(recipe(tmp_path, store, epochs=2))])
    run = tmp_path / "run"
    assert cli.trainer.global_step == 2 * len(cli.datamodule.train_dataloader())
    assert (run / "checkpoints" / "last.ckpt").exists()
    saved = yaml.safe_load(next(run.rglob("config.yaml")).read_text())
    assert saved["data"]["init_args"]["store"] == str(store)  # the full resolved config is saved
    metrics = next(run.rglob("metrics.csv")).read_text()
    assert "train/loss/d2" in metrics and "val/loss" in metrics


@pytest.mark.slow
def test_kill_9_and_resume_continues_the_same_run(tmp_path):
    store = build_store(tmp_path / "store", n_corpus=200)
    cfg = recipe(tmp_path, store, epochs=6, logger="wandb", slow=True)
    proc = smec("fit", "--config", str(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and _epoch_of(last) >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _epoch_of(last)
    assert 1 <= killed_at < 5

    saved = next((tmp_path / "run").glob("config.yaml"))
    run_id = yaml.safe_load(saved.read_text())["trainer"]["logger"]["init_args"]["id"]
    assert run_id
    proc = smec(
        "fit", "--config", str(saved), "--ckpt_path", "last", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    import torch

    ckpt = torch.load(last, weights_only=False, map_location="cpu")
    steps_per_epoch = ckpt["global_step"] // (ckpt["epoch"] + 1)
    assert ckpt["epoch"] == 5 and ckpt["global_step"] == 6 * steps_per_epoch  # no step counted twice
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert runs and all(r.name.endswith(run_id) for r in runs)  # one W&B run id across the restart


def _epoch_of(path: Path) -> int:
    import torch

    for _ in range(5):
        try:
            return int(torch.load(path, weights_only=False, map_location="cpu")["epoch"])
        except Exception:  # being written right now
            time.sleep(0.1)
    return -1


def test_predict_writes_a_store_the_evaluator_reads(tmp_path):
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    cfg = recipe(tmp_path, store, epochs=1)
    run_lightning_cli(["fit", "--config", str(cfg)])
    out = tmp_path / "predicted"
    run_lightning_cli(
        [
            "predict",
            "--config",
            str(cfg),
            "--ckpt_path",
            str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
            "--trainer.callbacks+=smec.prediction.StorePredictionWriter",
            f"--trainer.callbacks.output_dir={out}",
        ]
    )
    predicted = EmbeddingStore(out)
    assert predicted.models == ["mrl"]
    source = EmbeddingStore(store)
    for ts in source.text_sets:
        arr = predicted.array("mrl", ts)
        assert arr.shape == (len(source.ids(ts)), 8) and arr.dtype == np.float32
        assert predicted.ids(ts) == source.ids(ts)
    assert predicted.qrels("test") == source.qrels("test")
    info = json.loads((out / "mrl" / "corpus" / "manifest.json").read_text())["model"]
    assert info["kind"] == "compressed" and info["source_models"] == ["m1", "m2"] and info["input_dim"] == 10


def test_loss_weights_do_not_clash_with_data_hyperparameters(tmp_path):
    """Lightning merges model and data hparams for the loggers; a shared key with other values is an error."""
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    cfg = recipe(tmp_path, store, epochs=1)
    cli = run_lightning_cli(["fit", "--config", str(cfg), "--model.init_args.weights=[1, 2, 1]"])
    assert cli.trainer.global_step > 0 and cli.model.hparams.weights == [1, 2, 1]


def test_resume_with_its_own_config_and_a_longer_budget(tmp_path):
    """Trainer settings (max_epochs raised) and the saved logger settings are not a checkpoint mismatch."""
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    first = run_lightning_cli(["fit", "--config", str(recipe(tmp_path, store, epochs=1))])
    steps = first.trainer.global_step
    saved = tmp_path / "run" / "config.yaml"
    again = run_lightning_cli(
        ["fit", "--config", str(saved), "--ckpt_path", "last", "--trainer.max_epochs", "2"]
    )
    assert again.trainer.global_step == 2 * steps  # resumed, not restarted
    assert yaml.safe_load(saved.read_text())["trainer"]["max_epochs"] == 2


def test_predict_and_validate_with_the_runs_config_leave_the_run_folder_alone(tmp_path, capsys):
    """The fit's config.yaml is not rewritten (no `logger: false`, no extra writer callback), no logs added."""
    from smec.lightning_cli import run_lightning_cli
    from tests.cli_harness import tree

    store = build_store(tmp_path / "store")
    run_lightning_cli(["fit", "--config", str(recipe(tmp_path, store, epochs=2))])
    run = tmp_path / "run"
    before = tree(run)
    for _ in range(2):  # a second call must not find a writer callback added by the first
        run_lightning_cli(
            [
                "predict",
                "--config",
                str(run / "config.yaml"),
                "--ckpt_path",
                "best",
                "--trainer.callbacks+=smec.prediction.StorePredictionWriter",
                f"--trainer.callbacks.output_dir={tmp_path / 'predicted'}",
                "--trainer.callbacks.overwrite=true",
            ]
        )
    cli = run_lightning_cli(["validate", "--config", str(run / "config.yaml"), "--ckpt_path", "last"])
    assert tree(run) == before
    assert cli.trainer.logger is None and "val/loss" in capsys.readouterr().out
    assert EmbeddingStore(tmp_path / "predicted").array("mrl", "corpus").shape == (100, 8)


def test_best_is_the_checkpoint_the_fit_selected(tmp_path):
    from smec.checkpoint import selected_checkpoint
    from smec.lightning_cli import run_lightning_cli

    store = build_store(tmp_path / "store")
    cfg = recipe(tmp_path, store, epochs=2)
    run_lightning_cli(["fit", "--config", str(cfg)])
    folder = tmp_path / "run" / "checkpoints"
    best = selected_checkpoint(folder)
    assert best.parent == folder and best.name.startswith("epoch=1")  # monitor None: the newest is "best"
    cli = run_lightning_cli(["validate", "--config", str(cfg), "--ckpt_path", "best"])
    assert cli.trainer.ckpt_path == str(best)

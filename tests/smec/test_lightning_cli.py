"""`smec fit / predict` through the LightningCLI on a tiny store: resume after kill -9 or SIGTERM (bit-identical to
an uninterrupted fit), W&B offline, predict."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from datamodules.store.reader import EmbeddingStore
from tests.conftest import build_store

REPO = Path(__file__).resolve().parents[2]


def recipe(tmp_path: Path, store: Path, *, epochs: int, logger: str = "csv", slow: bool = False) -> Path:
    """configs/mrl.yaml shrunk for a tiny store: small dims, checkpoints every epoch, no retrieval callback."""
    cfg = yaml.safe_load((REPO / "configs" / "mrl.yaml").read_text())
    cfg["fit_callbacks"] = {"enabled": False}  # only the callbacks below
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


def smec_recipe(tmp_path: Path, store: Path, name: str, *, slow_steps: float = 0.0) -> Path:
    """configs/smec.yaml, with all its (standard) callbacks, shrunk for a tiny store: chain 10 → 8 → 4, two epochs a stage."""
    cfg = yaml.safe_load((REPO / "configs" / "smec.yaml").read_text())
    cfg["model"]["init_args"].update(
        dims=[8, 4], sxbm={"memory_size": 48, "k": 4}, smrl={"epochs_per_stage": 2}
    )
    cfg["data"]["init_args"].update(store=str(store), models=None, batch_size=16, block_rows=32)
    cfg["trainer"].update(
        default_root_dir=str(tmp_path / name),
        min_epochs=4,
        max_epochs=5,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if slow_steps:  # the fit computes the same, only slower, so a signal can land mid-epoch
        cfg["trainer"].setdefault("callbacks", []).append(
            {"class_path": "tests.smec.slow_callback.SlowSteps", "init_args": {"seconds": slow_steps}}
        )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def val_by_epoch(run: Path) -> dict[int, dict[str, str]]:
    """Every logged epoch's validation metrics, from the CSV logs of all the fit's sessions (version_*)."""
    out: dict[int, dict[str, str]] = {}
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        for row in csv.DictReader(path.open()):
            values = {k: v for k, v in row.items() if k.startswith("val/") and v}
            if values:
                epoch = int(row["epoch"])
                assert out.setdefault(epoch, values) == values  # an epoch validated twice agrees with itself
    return out


def fit_outcome(run: Path) -> tuple[dict, str, int]:
    """(final weights, the selected checkpoint's name, global step) of a finished fit, from its last.ckpt."""
    import torch

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    best = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))["best_model_path"]
    return ckpt["state_dict"], Path(best).name, ckpt["global_step"]


def assert_same_fit(run: Path, reference: Path) -> None:
    import torch

    (state, best, step), (ref_state, ref_best, ref_step) = fit_outcome(run), fit_outcome(reference)
    assert set(state) == set(ref_state)
    assert [k for k in state if not torch.equal(state[k], ref_state[k])] == []
    assert (best, step) == (ref_best, ref_step)
    assert val_by_epoch(run) == val_by_epoch(reference)


def wait_for_epoch(path: Path, proc: subprocess.Popen, epoch: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and _epoch_of(path) >= epoch:
            return
        time.sleep(0.1)
    raise AssertionError(f"the fit ended or stalled before {path} reached epoch {epoch}")


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


def test_a_fit_log_carries_no_third_party_noise(tmp_path):
    store = build_store(tmp_path / "store")
    cfg = recipe(tmp_path, store, epochs=1, logger="wandb")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    env.pop("WANDB_SILENT", None)  # wandb's own warnings are what is checked
    out = subprocess.run(
        [sys.executable, "-m", "smec.cli", "fit", "--config", str(cfg)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    assert "Tracking run with wandb" in log  # the logger ran and spoke
    for noise in (
        "💡 Tip:",
        "anonymous setting",
        "LeafSpec",
        "IterableDataset` has `__len__`",
        "args parameter",
    ):
        assert noise not in log


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


@pytest.fixture(scope="module")
def smec_reference(tmp_path_factory):
    """An uninterrupted fit of the shrunk SMEC recipe (in-process: same threads, same numbers as a subprocess)."""
    from smec.lightning_cli import run_lightning_cli

    root = tmp_path_factory.mktemp("smec-reference")
    store = build_store(root / "store")
    run_lightning_cli(["fit", "--config", str(smec_recipe(root, store, "run"))])
    return store, root / "run"


@pytest.mark.slow
def test_sigterm_stops_a_fit_cleanly_and_it_resumes_bit_identical(tmp_path, smec_reference):
    store, reference = smec_reference
    cfg = smec_recipe(tmp_path, store, "run", slow_steps=0.15)
    proc = smec("fit", "--config", str(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    wait_for_epoch(last, proc, 2)  # inside stage 1, after the stage switch
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    assert re.search(
        rf"smec fit: stopped by SIGTERM at epoch \d+, step \d+, saved in {re.escape(str(last))}", err
    )
    saved = torch_load(last)
    loader = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader["epoch"] >= 2 and saved["global_step"] > 0
    proc = smec(
        "fit",
        "--config",
        str(tmp_path / "run" / "config.yaml"),
        "--ckpt_path",
        "last",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert_same_fit(tmp_path / "run", reference)


@pytest.mark.slow
def test_kill_9_inside_a_smec_stage_then_resume_is_bit_identical(tmp_path, smec_reference):
    store, reference = smec_reference
    cfg = smec_recipe(tmp_path, store, "run", slow_steps=0.15)
    proc = smec("fit", "--config", str(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    wait_for_epoch(last, proc, 2)  # epoch 3 runs: inside stage 1, after the stage switch at epoch 2
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _epoch_of(last) in (2, 3)
    proc = smec(
        "fit",
        "--config",
        str(tmp_path / "run" / "config.yaml"),
        "--ckpt_path",
        "last",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    state, best, step = fit_outcome(tmp_path / "run")
    ref_state, ref_best, ref_step = fit_outcome(reference)
    import torch

    assert [k for k in ref_state if not torch.equal(state[k], ref_state[k])] == []
    assert (best, step) == (ref_best, ref_step)
    # kill -9 gives the CSV logger no chance to flush: compare the epochs the resumed session logged.
    resumed, ref = val_by_epoch(tmp_path / "run"), val_by_epoch(reference)
    assert resumed and all(ref[e] == v for e, v in resumed.items())


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=False, map_location="cpu")


def test_smec_fit_stopped_by_sigterm_exits_128_plus_15_with_one_line(tmp_path, capsys):
    """The `smec fit` entry point in-process, a real SIGTERM mid-epoch: exit status 143, one line, no traceback."""
    from smec.cli import main

    store = build_store(tmp_path / "store")
    cfg = yaml.safe_load(recipe(tmp_path, store, epochs=4).read_text())
    cfg["trainer"]["callbacks"] = [
        {"class_path": "smec.checkpointing.ResumeCheckpoint"},
        {"class_path": "tests.smec.test_checkpointing.SendSignal", "init_args": {"epoch": 1, "batch": 2}},
    ]
    (tmp_path / "signal.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(tmp_path / "signal.yaml")])
    assert stopped.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert err.strip().splitlines()[-1] == (
        f"smec fit: stopped by SIGTERM at epoch 1, step {torch_load(last)['global_step']}, saved in {last}: "
        "resume with --ckpt_path last"
    )
    saved = torch_load(last)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 3}]


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


def test_quieting_twice_adds_no_second_filter():
    import logging
    import warnings

    from smec.lightning_cli import quiet_expected_warnings

    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with warnings.catch_warnings():
        quiet_expected_warnings()
        before = (len(tips.filters), len(warnings.filters))
        quiet_expected_warnings()
        assert (len(tips.filters), len(warnings.filters)) == before

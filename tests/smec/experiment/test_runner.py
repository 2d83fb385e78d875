"""`smec compare` end to end on a tiny BEIR folder with the fake encoder: files, rerun = no-op, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from smec.evaluation.results import read_results
from smec.experiment.state import GRID_VERSION
from tests.datamodules.test_embed import FAKE, write_beir

REPO = Path(__file__).resolve().parents[3]
FAKE_KEY = "tests.datamodules.fake_encoder--make"


def tiny_recipe(tmp_path: Path, epochs: int = 2, slow: bool = False) -> Path:
    """configs/mrl.yaml shrunk to the 8-d fake model: dev-selected checkpoints, 2 epochs."""
    cfg = yaml.safe_load((REPO / "configs" / "mrl.yaml").read_text())
    cfg["model"]["init_args"].update(output_dim=8, dims=[2, 4, 8])
    cfg["data"]["init_args"].update(batch_size=16)
    cfg["trainer"].update(max_epochs=epochs, log_every_n_steps=1, enable_model_summary=False)
    if slow:  # epochs long enough to kill the comparison between checkpoints
        cfg["trainer"]["callbacks"] = [{"class_path": "tests.smec.slow_callback.SlowEpochs"}]
    path = tmp_path / "tiny-mrl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def experiment(tmp_path: Path, logger: str = "csv", **recipe) -> Path:
    data = write_beir(tmp_path / "beir", n_docs=120, n_queries=60)
    with open(data / "qrels" / "dev.tsv", "w") as f:  # the recipes select checkpoints on dev
        f.write(
            "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{(3 * i) % 120}\t1\n" for i in range(40, 60))
        )
    cfg = {
        "name": "tiny",
        "dataset": str(data),
        "store": str(tmp_path / "store"),
        "models": [FAKE],
        "dims": [2, 4],
        "precisions": ["float32", "int8"],
        "seeds": [0],
        "trainer": [str(REPO / "configs/trainer/cpu.yaml")],
        "logger": logger,
        "baselines": {"pq": False, "fit_sample": 100},
        "methods": [
            {
                "name": "mrl",
                "config": str(tiny_recipe(tmp_path, **recipe)),
                "args": {"model.init_args.dims": [2, 4, 8]},
            }
        ],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


ENV = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def compare_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "smec.cli", "compare", "--config", str(config), "--out", str(out)]
    return [*base, "--no-progress", *extra]


def compare(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        compare_cmd(config, out, *extra), cwd=REPO, env=ENV, text=True, capture_output=True, timeout=600
    )


def child_pids(pid: int) -> list[int]:
    kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(k) for k in kids]


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_compare_writes_the_report_and_a_rerun_is_a_no_op(tmp_path):
    out = tmp_path / "run"
    done = compare(experiment(tmp_path, logger="wandb"), out)
    assert done.returncode == 0, done.stderr[-3000:]
    rows, meta = read_results(out / "results.json")
    methods = {r["method"] for r in rows}
    assert {"concat", "pca", f"model:{FAKE_KEY}", "mrl"} <= methods
    mrl = [r for r in rows if r["method"] == "mrl"]
    assert {(r["dim"], r["precision"], r["seed"]) for r in mrl} == {
        (d, p, 0) for d in (2, 4) for p in ("float32", "int8")
    }
    assert meta["experiment"] == "tiny" and "per_query" in mrl[0]
    report = (out / "report.md").read_text()
    assert "## Best of each method per budget" in report and "| mrl |" in report
    assert list(meta["model_dims"]) == [FAKE_KEY] and "**Selected at the last epoch?**" in report
    for png in ("pareto.png", "curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert (out / "mrl/s0/config.yaml").exists() and (out / "mrl/s0/fit.done").exists()
    # every fit is evaluated on the grid, with the experiment's evaluation spec (dev selection = test settings)
    saved = yaml.safe_load((out / "mrl/s0/config.yaml").read_text())
    assert saved["model"]["init_args"]["eval_dims"] == [2, 4]
    assert saved["evaluation"]["calibration_size"] == 100 and saved["evaluation"]["precisions"] == [
        "float32",
        "int8",
    ]
    selected = json.loads((out / "mrl/s0/fit_result.json").read_text())["checkpoint"]
    assert (
        selected.startswith("checkpoints/best-")
        and read_results(out / "mrl/s0/test.json")[1]["checkpoint"] == selected
    )
    # one W&B group: the training run and the summary run, both offline
    assert list((out / "mrl/s0/wandb").glob("offline-run-*-mrl-s0"))
    assert list((out / "wandb").glob("offline-run-*-summary"))
    assert "report:" in done.stdout

    log_before = (out / "mrl/s0/fit.log").read_text()
    again = compare(experiment(tmp_path / "again", logger="wandb"), out)  # same content, other path: refused
    assert again.returncode == 2 and "holds a comparison of other data" in again.stderr
    rerun = compare(tmp_path / "tiny.yaml", out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "fits: all 1 done" in rerun.stderr and "baselines: reusing" in rerun.stderr
    assert (out / "mrl/s0/fit.log").read_text() == log_before
    assert read_results(out / "results.json")[0][-1]["ndcg@10"] == rows[-1]["ndcg@10"]


def test_an_interrupted_fit_resumes_from_its_last_checkpoint(tmp_path):
    config = experiment(tmp_path)
    out = tmp_path / "run"
    assert compare(config, out).returncode == 0
    run = out / "mrl" / "s0"
    first = read_results(run / "test.json")[0]
    # what a kill leaves: a last checkpoint, no fit.done, no test rows
    (run / "fit.done").unlink()
    (run / "test.json").unlink()
    (out / "results.json").unlink()
    resumed = compare(config, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (run / "fit.log").read_text()
    assert "# resume" in log and f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in log
    # the finished fit resumed at its last epoch: same checkpoint selected, same test rows
    assert [r["ndcg@10"] for r in read_results(run / "test.json")[0]] == [r["ndcg@10"] for r in first]


def test_task_list_and_a_failing_fit(tmp_path):
    config = experiment(tmp_path)
    listed = compare(config, tmp_path / "run", "--list")
    assert listed.returncode == 0 and listed.stdout == "0\tmrl/s0\ttodo\n"
    bad = yaml.safe_load(config.read_text())
    # A setting only the fit itself can refuse (PCA init needs a one-layer decoder: checked when the fit
    # starts); settings the system's constructor refuses are found before any fit (test_bad_input_cli.py).
    bad["methods"][0]["args"].update(
        {"model.init_args.init_from": "pca", "model.init_args.arch": "encoder_only"}
    )
    config.write_text(yaml.safe_dump(bad))
    failed = compare(config, tmp_path / "run2")
    assert failed.returncode == 1
    assert "smec compare: error: 1 fit(s) failed: mrl/s0 (log: " in failed.stdout
    assert "model.init_from" in (tmp_path / "run2/mrl/s0/fit.log").read_text()
    # the fit left no checkpoint, so its record does not bind: with the mistake fixed, the same folder refits
    del (
        bad["methods"][0]["args"]["model.init_args.init_from"],
        bad["methods"][0]["args"]["model.init_args.arch"],
    )
    config.write_text(yaml.safe_dump(bad))
    fixed = compare(config, tmp_path / "run2")
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert (
        "mrl/s0: its settings changed since a fit that left no checkpoint: starting it again" in fixed.stderr
    )
    assert (tmp_path / "run2/mrl/s0/test.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc; the fits die with the parent on Linux"
)
def test_kill_9_of_the_comparison_stops_its_fits_and_a_rerun_finishes(tmp_path):
    config = experiment(tmp_path, epochs=6, slow=True)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        compare_cmd(config, out), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = out / "mrl" / "s0" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists(), "the fit never checkpointed"
    fits = child_pids(proc.pid)
    assert fits
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while any(running(p) for p in fits) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(running(p) for p in fits), "fits outlived a killed `smec compare`"
    assert not (out / "mrl" / "s0" / "fit.done").exists()
    rerun = compare(config, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (out / "mrl" / "s0" / "fit.log").read_text()
    assert "# resume" in log and (out / "report.md").exists()


def test_editing_the_experiment_adds_reevaluates_or_refuses(tmp_path):
    config = experiment(tmp_path)
    out = tmp_path / "run"
    assert compare(config, out).returncode == 0
    cfg = yaml.safe_load(config.read_text())
    cfg["precisions"] = ["float32"]  # a smaller grid: re-evaluated from the same checkpoint, no refit
    config.write_text(yaml.safe_dump(cfg))
    regrid = compare(config, out)
    assert regrid.returncode == 0, regrid.stderr[-3000:]
    assert "fits: all 1 done" in regrid.stderr and "the grid changed, recomputing" in regrid.stderr
    assert {r["precision"] for r in read_results(out / "results.json")[0]} == {"float32"}
    # A grid stored by other grid code (GRID_VERSION) is re-evaluated too, though the spec is the same.
    stored = out / "baselines" / "results.json"
    data = json.loads(stored.read_text())
    data["metadata"]["grid"]["grid_version"] -= 1
    stored.write_text(json.dumps(data))
    regrid = compare(config, out)
    assert regrid.returncode == 0, regrid.stderr[-3000:]
    assert "baselines: the grid changed, recomputing" in regrid.stderr
    assert json.loads(stored.read_text())["metadata"]["grid"]["grid_version"] == GRID_VERSION
    cfg["methods"][0]["args"]["model.init_args.lr"] = 0.01  # a different fit under the same name
    config.write_text(yaml.safe_dump(cfg))
    refused = compare(config, out)
    assert refused.returncode == 2
    assert (
        f"smec compare: error: {out / 'mrl' / 's0'} was fitted with other settings (args changed)"
        in refused.stderr
    )
    # The store embedded again (other vectors under the same path: here one shard's recorded hash): refused
    # before anything is read or fitted, naming the store.
    del cfg["methods"][0]["args"]["model.init_args.lr"]
    config.write_text(yaml.safe_dump(cfg))
    manifest = next((tmp_path / "store").rglob("manifest.json"))
    data = json.loads(manifest.read_text())
    data["shards"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    refused = compare(config, out)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert (
        f"smec compare: error: {tmp_path / 'store'} holds other vectors than when {out} was started"
        in refused.stderr
    )


def test_fit_progress_is_counted_in_epochs(tmp_path):
    from smec.experiment.config import load_experiment
    from smec.experiment.runner import ComparisonRunner, epochs_logged

    root = tmp_path / "fit"
    assert epochs_logged(root) == 0
    for version, epochs in ((0, [0, 0, 1]), (1, [2, 3])):  # a resumed fit logs into a new version folder
        (root / f"csv/version_{version}").mkdir(parents=True)
        lines = ["epoch,step,train/loss_epoch"] + [f"{e},{i},0.5" for i, e in enumerate(epochs)]
        (root / f"csv/version_{version}/metrics.csv").write_text("\n".join(lines) + "\n")
    assert epochs_logged(root) == 4
    cfg = load_experiment(REPO / "configs/experiment/demo.yaml")
    runner = ComparisonRunner(cfg, tmp_path / "run", progress=False)
    budgets = {r.method.name: runner.epoch_budget(r) for r in runner.fit_runs()}
    assert budgets["mrl"] == 12 and budgets["smec"] == 8  # the experiment's overrides
    assert budgets["search-adaptor"] == 30


def test_fits_of_a_higher_priority_start_first(tmp_path, monkeypatch):
    """The demo's slowest fit (Matryoshka-Adaptor, priority 1) is queued first; the rest keep file order."""
    from smec.experiment import runner as runner_module
    from smec.experiment.config import load_experiment
    from smec.experiment.runner import ComparisonRunner

    queued: list[str] = []

    def fake_run_jobs(jobs, parallel, env, **kwargs):
        queued.extend(job.label for job in jobs)
        return []

    monkeypatch.setattr(runner_module, "run_jobs", fake_run_jobs)
    cfg = load_experiment(REPO / "configs/experiment/demo.yaml")
    runner = ComparisonRunner(cfg, tmp_path / "run", progress=False)
    runner.fit_all("nonce", runner.fit_runs())
    names = [m.name for m in cfg.methods]
    assert queued == ["matryoshka-adaptor/s0"] + [f"{n}/s0" for n in names if n != "matryoshka-adaptor"]


def test_prepare_then_one_task_then_the_report(tmp_path):
    """The SLURM flow: --prepare (embed + baselines), --task N per array task, then a plain run reports."""
    config = experiment(tmp_path)
    out = tmp_path / "run"
    prep = compare(config, out, "--prepare")
    assert prep.returncode == 0, prep.stderr[-3000:]
    assert (out / "baselines" / "results.json").exists() and not (out / "mrl").exists()
    task = compare(config, out, "--task", "0")
    assert task.returncode == 0, task.stderr[-3000:]
    assert (out / "mrl/s0/test.json").exists() and not (out / "report.md").exists()
    bad = compare(config, out, "--task", "3")
    assert bad.returncode == 2 and "--task 3: the experiment has tasks 0..0" in bad.stderr
    report = compare(config, out)
    assert report.returncode == 0 and "fits: all 1 done" in report.stderr and (out / "report.md").exists()


def test_a_fit_record_binds_only_once_the_fit_left_a_checkpoint(tmp_path):
    """A fit that failed before its first checkpoint (a typo fixed since) runs again with the new settings."""
    from smec.experiment.config import ExperimentError, load_experiment
    from smec.experiment.runner import ComparisonRunner

    config = experiment(tmp_path)
    runner = ComparisonRunner(load_experiment(config), tmp_path / "run", progress=False)
    (run,) = runner.fit_runs()
    run.root.mkdir(parents=True)
    (run.root / "fit.json").write_text('{"args": {"model.init_args.lrr": 0.01}, "recipes": {}, "seed": 0}')
    runner.state.check_fit(run)  # nothing came of the failed fit: its record is replaced
    assert json.loads((run.root / "fit.json").read_text()) == runner.state.fit_signature(run)
    (run.root / "fit.json").write_text('{"args": {}, "recipes": {}, "seed": 0}')
    (run.root / "checkpoints").mkdir()
    (run.root / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(ExperimentError, match="was fitted with other settings"):
        runner.state.check_fit(run)  # a checkpoint exists: these weights belong to the recorded settings


def test_the_test_grid_loads_checkpoints_safely(tmp_path):
    import torch

    from smec.errors import ConfigError
    from smec.experiment.evaluate import load_system
    from smec.fit_result import read_fit_result

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))

    root = tmp_path / "fit"
    folder = root / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {}, "callbacks": {"ModelCheckpoint{}": Evil()}}, folder / "last.ckpt")
    result = {
        "format": 1,
        "checkpoint": "checkpoints/last.ckpt",
        "epoch": 0,
        "monitor": None,
        "score": None,
        "model_class": "smec.systems.mrl.MRLDecoderModule",
        "data": {},
    }
    (root / "fit_result.json").write_text(json.dumps(result))
    with pytest.raises(ConfigError, match=r"^test grid: \S+last\.ckpt: refused to load: it holds \S*open"):
        load_system(result["model_class"], read_fit_result(root).checkpoint_path(root))
    assert not (tmp_path / "ran").exists()
    with pytest.raises(
        ConfigError, match=r"^test grid: \S+: model.class_path 'os.system' is not a smec compression system"
    ):
        load_system("os.system", folder / "last.ckpt")
    # A fit result is read from a file: its checkpoint path must stay inside the run.
    (tmp_path / "outside.ckpt").write_bytes(b"")
    (root / "fit_result.json").write_text(json.dumps({**result, "checkpoint": "../outside.ckpt"}))
    with pytest.raises(ConfigError, match=r"checkpoint '\.\./outside\.ckpt' is not inside"):
        read_fit_result(root)

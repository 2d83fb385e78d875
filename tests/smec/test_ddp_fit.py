"""Two-process CPU DDP fits of MRL and SMEC through `smec fit` and configs/trainer/ddp.yaml (gloo), on a tiny store.

What each rank saw is recorded by tests/smec/ddp_probe.py: every row of an epoch reaches some rank, each step's
global batch is data.batch_size rows (half on each rank), the ranks draw the same random numbers (ADS's Gumbel
noise comes from the global torch RNG) and end with identical weights and buffers (S-XBM's memory included,
with DDP's buffer broadcast off, so nothing but the all-gathered enqueue keeps them equal).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.store.combine import combine
from datamodules.store.reader import EmbeddingStore
from tests.conftest import build_store

REPO = Path(__file__).resolve().parents[2]
BATCH, EPOCHS, ROWS = 8, 2, 140  # the tiny store streams 100 corpus rows + 40 train queries

SYSTEMS = {
    "mrl": [
        "--config=configs/mrl.yaml",
        "--model.init_args.output_dim=8",
        "--model.init_args.dims=[2, 4, 8]",
        "--model.init_args.arch=simple_encoder",  # LN -> Linear -> BatchNorm: smec.sync_batchnorm on gloo
    ],
    "smec": [  # two stages (10 -> 8 -> 4): the second epoch switches stage and rebuilds the optimizer
        "--config=configs/smec.yaml",
        "--model.init_args.dims=[8, 4]",
        "--model.init_args.smrl.epochs_per_stage=1",
        "--model.init_args.sxbm.memory_size=16",
        "--model.init_args.sxbm.k=4",
        f"--trainer.min_epochs={EPOCHS}",
    ],
}


@pytest.fixture(scope="module")
def ddp_fits(tmp_path_factory) -> dict[str, Path]:
    """Both fits at once (process start-up is most of their cost, and it runs on separate cores)."""
    tmp = tmp_path_factory.mktemp("ddp")
    store = build_store(tmp / "store")
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    procs = {}
    for system, recipe in SYSTEMS.items():
        run = tmp / system
        args = [
            *recipe,
            "--config=configs/trainer/ddp.yaml",
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",  # this profile picks the GPUs where there are any
            f"--data.init_args.store={store}",
            "--data.init_args.models=[m1, m2]",
            f"--data.init_args.batch_size={BATCH}",
            f"--trainer.max_epochs={EPOCHS}",
            f"--trainer.default_root_dir={run}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.callbacks+=tests.smec.ddp_probe.DDPProbe",
            f"--trainer.callbacks.out={run / 'probe'}",
        ]
        run.mkdir()
        log = (run / "fit.log").open("w")
        procs[system] = subprocess.Popen(
            [sys.executable, "-m", "smec.cli", "fit", *args], cwd=REPO, env=env, stdout=log, stderr=log
        )
    for proc in procs.values():
        try:
            proc.wait(timeout=600)  # a collective mismatch would hang: fail instead
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    runs = {system: tmp / system for system in SYSTEMS}
    for system, proc in procs.items():
        runs[system].joinpath("returncode").write_text(str(proc.returncode))
    return runs


def ddp_fit(runs: dict[str, Path], system: str) -> list[dict]:
    run = runs[system]
    code = int((run / "returncode").read_text())
    assert code == 0, (run / "fit.log").read_text()[-3000:]
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert list(
        (run / "checkpoints").glob("best-*.ckpt")
    )  # selected on val/ndcg@10/mean, known on every rank
    assert "val/ndcg@10/mean" in next(run.rglob("metrics.csv")).read_text()  # rank 0's evaluation, broadcast
    return [torch.load(run / "probe" / f"rank{r}.pt") for r in range(2)]


def training_rows(store: Path) -> np.ndarray:
    s = EmbeddingStore(store)
    return np.concatenate(
        [combine([s.array(m, ts).read() for m in ("m1", "m2")]) for ts in ("corpus", "queries/train")]
    )


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_two_process_cpu_ddp_fit(ddp_fits, system):
    ranks = ddp_fit(ddp_fits, system)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    steps_per_epoch = -(-ROWS // BATCH)  # global batches of data.batch_size rows, the last one padded
    assert all(r["global_step"] == len(r["steps"]) == EPOCHS * steps_per_epoch for r in ranks)

    reference = torch.from_numpy(training_rows(ddp_fits[system].parent / "store"))
    for epoch in range(EPOCHS):
        seen = []
        for r in ranks:
            batches = [s["rows"]["x"] for s in r["steps"] if s["epoch"] == epoch]
            assert all(len(b) == BATCH // 2 for b in batches)  # data.batch_scope: global
            seen.append(torch.cat(batches))
        x = torch.cat(seen)
        row = (x @ reference.T).argmax(1)  # which stored row each streamed row is
        torch.testing.assert_close(x, reference[row], rtol=1e-5, atol=1e-6)
        assert len(set(row.tolist())) == ROWS and len(row) == steps_per_epoch * BATCH

    assert [s["rng"] for s in ranks[0]["steps"]] == [s["rng"] for s in ranks[1]["steps"]]
    state0, state1 = ranks[0]["state"], ranks[1]["state"]
    assert state0.keys() == state1.keys()
    assert [k for k in state0 if not torch.equal(state0[k], state1[k])] == []
    if system == "smec":
        assert int(state0["sxbm.memory.filled"]) == 16 and int(state0["compressor.active_stage"]) == 1


def test_a_batch_that_cannot_be_split_fails_before_any_process_starts(tmp_path, capsys):
    from tests.cli_harness import assert_fails_cleanly

    store = build_store(tmp_path / "store")
    assert_fails_cleanly(
        capsys,
        [
            "fit",
            "--config=configs/mrl.yaml",
            "--config=configs/trainer/ddp.yaml",
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",
            f"--data.init_args.store={store}",
            "--data.init_args.models=[m1, m2]",
            "--data.init_args.batch_size=7",
            "--model.init_args.output_dim=8",  # the tiny store is 10-d: a compressor must not widen it
            "--model.init_args.dims=[2, 4, 8]",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ],
        expect=r"data\.batch_size: 7 rows cannot be split evenly over 2 DDP processes",
        watch=tmp_path,
    )

"""`smec embed` split across workers (datamodules/store/workers.py): disjoint shards, a merge byte-identical to one
process, a killed worker resumed, a missing or changed shard named with the worker that owns it."""

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from datamodules.embed import embed_dataset
from datamodules.store.layout import STORE_FILE, WORKERS_DIR
from datamodules.store.reader import EmbeddingStore
from datamodules.store.workers import WorkerShare
from tests.cli_harness import assert_fails_cleanly, run_smec
from tests.datamodules.test_embed import FAKE, embed_argv, shard_hashes, smec_embed, write_beir

KEY = "tests.datamodules.fake_encoder--make"
CORPUS = Path(KEY) / "corpus"


def embed(data: Path, out: Path, share: WorkerShare | None = None, merge: bool = False, shard_rows: int = 16):
    return embed_dataset(
        str(data), [FAKE], out, shard_rows=shard_rows, progress=False, share=share, merge=merge
    )


@pytest.fixture
def job(tmp_path):
    """A BEIR folder (300 documents: 19 shards of 16 rows; 2 query splits of 20) and its one-process store."""
    data = write_beir(tmp_path / "beir")
    embed(data, tmp_path / "reference")
    return data, tmp_path / "reference"


def test_a_share_owns_every_nth_shard():
    share = WorkerShare(1, 3)
    assert [s for s in range(8) if share.owns(s)] == [1, 4, 7]
    assert WorkerShare(0, 3).rows(300, 16) == 6 * 16 + 12  # shards 0, 3, ..., 18 (the last has 12 rows)
    assert WorkerShare(2, 3).rows(20, 16) == 0  # a query split of 2 shards: nothing for worker 2
    assert str(share) == "worker 1 of 3"


def test_workers_then_merge_is_byte_identical_to_one_process(job, tmp_path):
    data, reference = job
    out = tmp_path / "sharded"
    encoded = {}
    for i in (2, 0, 1):  # any order; each writes only its own files
        encoded[i] = embed(data, out, WorkerShare(i, 3)).encoded[KEY]
    assert encoded == {0: 108 + 16 + 16, 1: 96 + 4 + 4, 2: 96}  # query splits: shards of 16 and 4 rows
    assert not (out / STORE_FILE).exists() and not list(
        out.rglob("manifest.json")
    )  # only the merge writes them
    assert len(list((out / CORPUS).glob("shard-*.npy"))) == 19
    assert sorted(p.name for p in (out / WORKERS_DIR).iterdir()) == [
        f"worker-{i}-of-3.json" for i in range(3)
    ]

    embed(data, out, merge=True)
    assert shard_hashes(out) == shard_hashes(reference)  # every file, store.json and manifests included
    assert not (out / WORKERS_DIR).exists()
    EmbeddingStore(out).verify()
    embed(data, out, merge=True)  # a finished store: the merge is a no-op
    assert shard_hashes(out) == shard_hashes(reference)


def test_slurm_and_torchrun_variables_make_a_worker(job, tmp_path, capsys, monkeypatch):
    data, reference = job
    out = tmp_path / "sharded"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "8")  # --array=7-8: the second task is worker 1
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    outcome = run_smec(capsys, embed_argv(data, out))
    assert outcome.code == 0, outcome.err
    assert "worker 1 of 2 (from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT)" in outcome.err
    assert "worker 1 of 2: done" in outcome.out
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_smec(capsys, embed_argv(data, out)).code == 0
    assert sorted(p.name for p in (out / WORKERS_DIR).iterdir()) == [
        "worker-0-of-2.json",
        "worker-1-of-2.json",
    ]
    # the merge ignores the variables
    outcome = run_smec(capsys, embed_argv(data, out, "--merge", "--verify"))
    assert outcome.code == 0, outcome.err
    assert shard_hashes(out) == shard_hashes(reference)


def test_kill_9_of_one_worker_then_rerunning_it_finishes(job, tmp_path, capsys):
    data, reference = job
    out = tmp_path / "sharded"
    proc = smec_embed(data, out, "--worker-index", "1", "--num-workers-total", "2", delay=0.05)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.rglob("shard-*.npy"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 3 <= len(list(out.rglob("shard-*.npy"))) < 9  # worker 1 owns 9 corpus shards: killed midway
    embed(data, out, WorkerShare(0, 2))
    assert_fails_cleanly(
        capsys,
        embed_argv(data, out, "--merge"),
        expect=re.escape(f"{out / CORPUS}/shard-000") + r"\d\d.npy: missing; worker 1 of 2 owns it",
        watch=tmp_path,
    )
    embed(data, out, WorkerShare(1, 2))  # the same worker again: keeps its complete shards, writes the rest
    embed(data, out, merge=True)
    assert shard_hashes(out) == shard_hashes(reference)


@pytest.fixture
def workers_done(job, tmp_path):
    data, _ = job
    out = tmp_path / "sharded"
    for i in range(3):
        embed(data, out, WorkerShare(i, 3))
    return data, out


def test_a_merge_with_a_missing_shard_names_it_and_its_worker(job, workers_done, tmp_path, capsys):
    (data, out), reference = workers_done, job[1]
    shard = out / CORPUS / "shard-00004.npy"
    shard.unlink()
    expected = (
        f"{shard}: missing; worker 1 of 3 owns it (deleted after the worker wrote it): rerun it (`smec embed` "
        "with the same options and --worker-index 1 --num-workers-total 3), then merge again"
    )
    assert_fails_cleanly(
        capsys, embed_argv(data, out, "--merge"), expect=re.escape(expected) + "$", watch=tmp_path
    )
    embed(data, out, WorkerShare(1, 3))  # the advice works: the worker writes its deleted shard again
    embed(data, out, merge=True)
    assert shard_hashes(out) == shard_hashes(reference)


def test_a_merge_before_a_worker_ran_names_what_it_owns(job, tmp_path, capsys):
    data, _ = job
    out = tmp_path / "sharded"
    embed(data, out, WorkerShare(0, 3))
    embed(data, out, WorkerShare(1, 3))
    expected = (
        f"{out / CORPUS / 'shard-00002.npy'}: missing; worker 2 of 3 owns it (it has not started, or was killed "
        "before its first shard): rerun it (`smec embed` with the same options and --worker-index 2 "
        "--num-workers-total 3), then merge again; 5 more missing there, of worker(s) 2"
    )
    assert_fails_cleanly(
        capsys, embed_argv(data, out, "--merge"), expect=re.escape(expected) + "$", watch=tmp_path
    )


def test_a_merge_refuses_a_shard_changed_after_its_worker_wrote_it(job, workers_done, tmp_path, capsys):
    (data, out), reference = workers_done, job[1]
    shard = out / CORPUS / "shard-00005.npy"
    np.save(shard, np.zeros((16, 8), dtype=np.float16))  # same shape and dtype, other bytes
    expected = (
        f"{shard}: sha256 differs from what worker 2 of 3 recorded ({out / WORKERS_DIR / 'worker-2-of-3.json'}): "
        "the shard changed after it was written; delete it and rerun worker 2 of 3"
    )
    assert_fails_cleanly(capsys, embed_argv(data, out, "--merge"), expect=re.escape(expected), watch=tmp_path)
    shard.unlink()
    embed(data, out, WorkerShare(2, 3))
    embed(data, out, merge=True)
    assert shard_hashes(out) == shard_hashes(reference)


def test_a_merge_without_workers_writes_nothing(job, tmp_path, capsys):
    data, _ = job
    out = tmp_path / "sharded"
    expected = (
        f"{out}: --merge found no worker's partial manifest in {out / WORKERS_DIR}; run the workers first"
    )
    assert_fails_cleanly(capsys, embed_argv(data, out, "--merge"), expect=re.escape(expected), watch=tmp_path)


@pytest.mark.parametrize(
    ("extra", "env", "expect"),
    [
        (
            ["--worker-index", "3", "--num-workers-total", "3"],
            {},
            "--worker-index: expected an integer from 0 to 2 (--num-workers-total is 3), got 3",
        ),
        (
            ["--worker-index", "-1", "--num-workers-total", "2"],
            {},
            "--worker-index: expected an integer from 0 to 1 (--num-workers-total is 2), got -1",
        ),
        (
            ["--worker-index", "0", "--num-workers-total", "0"],
            {},
            "--num-workers-total: expected a positive integer, got 0",
        ),
        (
            ["--worker-index", "1"],
            {},
            "--worker-index and --num-workers-total go together: give both, or neither",
        ),
        (
            ["--merge", "--worker-index", "0", "--num-workers-total", "2"],
            {},
            "--merge: finishes the workers' job and embeds nothing itself; give it without --worker-index and "
            "--num-workers-total",
        ),
        (
            ["--worker-index", "0", "--num-workers-total", "2", "--verify"],
            {},
            "--verify: checks a finished store; give it to the --merge, not to a worker",
        ),
        (
            [],
            {"RANK": "2", "WORLD_SIZE": "2"},
            "RANK: expected an integer from 0 to 1 (WORLD_SIZE is 2), got 2",
        ),
        (
            [],
            {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"},
            "environment variable SLURM_ARRAY_TASK_ID='x': expected an integer",
        ),
    ],
)
def test_bad_worker_options_are_one_error_before_anything_is_written(
    tmp_path, capsys, monkeypatch, extra, env, expect
):
    data = write_beir(tmp_path / "beir")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert_fails_cleanly(
        capsys, embed_argv(data, tmp_path / "store", *extra), expect=re.escape(expect), watch=tmp_path
    )


def test_workers_of_one_job_must_agree(job, tmp_path, capsys):
    data, _ = job
    out = tmp_path / "sharded"
    embed(data, out, WorkerShare(0, 2))
    record = out / WORKERS_DIR / "worker-0-of-2.json"
    expected = (
        f"{record}: worker 0 of 2 embedded with shard_rows 16, worker 1 of 2 with 8; give every worker and the "
        "merge the same --shard-rows"
    )
    args = embed_argv(data, out, "--worker-index", "1", "--num-workers-total", "2", "--shard-rows", "8")
    assert_fails_cleanly(capsys, args, expect=re.escape(expected), watch=tmp_path)
    expected = (
        f"{record}: a worker of a job of 2 workers, and this is worker 1 of 3; give every worker the same"
    )
    args = embed_argv(data, out, "--worker-index", "1", "--num-workers-total", "3")
    assert_fails_cleanly(capsys, args, expect=re.escape(expected), watch=tmp_path)


def test_a_plain_run_finishes_what_the_workers_left(job, tmp_path):
    data, reference = job
    out = tmp_path / "sharded"
    embed(data, out, WorkerShare(0, 2))
    report = embed(data, out)  # no worker options: keeps worker 0's shards, embeds the rest
    assert report.encoded[KEY] == 9 * 16 + 4 + 4  # worker 1's shards only
    assert shard_hashes(out) == shard_hashes(reference)

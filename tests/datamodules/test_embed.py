"""`smec embed` end to end: any BEIR folder, resumable after kill -9, byte-identical, a no-op when finished."""

import hashlib
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

from datamodules.embed import embed_dataset
from datamodules.errors import InputError
from datamodules.store.reader import EmbeddingStore

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.datamodules.fake_encoder:make"


def write_beir(root: Path, n_docs: int = 300, n_queries: int = 40, bad_text: str | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(n_docs):
            text = bad_text if (bad_text and i == 5) else f"document number {i} about topic {i % 17}"
            f.write(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as f:
        for i in range(n_queries):
            f.write(json.dumps({"_id": f"q{i}", "text": f"which document is about topic {i % 17}?"}) + "\n")
    for split, rng in (("train", range(0, 20)), ("test", range(20, n_queries))):
        with open(root / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for i in rng:
                f.write(f"q{i}\td{(3 * i) % n_docs}\t1\n")
    return root


def shard_hashes(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def embed_argv(data: Path, out: Path, *extra: str, shard_rows: int = 16) -> list[str]:
    """``smec embed``'s arguments for the fake encoder on ``data``, into ``out``, without progress bars."""
    return [
        "embed",
        "--dataset",
        str(data),
        "--models",
        FAKE,
        "--out",
        str(out),
        "--shard-rows",
        str(shard_rows),
        "--no-progress",
        *extra,
    ]


def smec_embed(data: Path, out: Path, *extra: str, delay: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "SMEC_FAKE_DELAY": str(delay), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "smec.cli", *embed_argv(data, out, *extra)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_any_beir_folder_embeds_into_a_store(tmp_path):
    data = write_beir(tmp_path / "beir")
    report = embed_dataset(str(data), [FAKE], tmp_path / "store", shard_rows=64, progress=False)
    store = EmbeddingStore(tmp_path / "store")
    assert store.text_sets == ["corpus", "queries/test", "queries/train"]
    assert store.models == ["tests.datamodules.fake_encoder--make"]
    key = store.models[0]
    assert store.array(key, "corpus").shape == (300, 8)
    assert store.array(key, "corpus").dtype == np.float16
    assert store.qrels("test")["q20"] == {"d60": 1}
    assert report.encoded[key] == 340
    store.verify()
    again = embed_dataset(str(data), [FAKE], tmp_path / "store", shard_rows=64, progress=False)
    assert again.encoded == {}  # a finished store is a no-op


def test_kill_9_then_rerun_gives_byte_identical_shards(tmp_path):
    data = write_beir(tmp_path / "beir")
    reference = tmp_path / "reference"
    proc = smec_embed(data, reference)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()

    killed = tmp_path / "killed"
    proc = smec_embed(data, killed, delay=0.05)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(killed.rglob("shard-*.npy"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    partial = len(list(killed.rglob("shard-*.npy")))
    assert 3 <= partial < len(list(reference.rglob("shard-*.npy")))  # really interrupted midway
    with pytest.raises(InputError):
        EmbeddingStore(killed).array("tests.datamodules.fake_encoder--make", "queries/train")

    proc = smec_embed(data, killed)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert shard_hashes(killed) == shard_hashes(reference)
    assert "texts/s" in err  # throughput is reported

    proc = smec_embed(data, killed)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "already complete, skipped" in err
    assert shard_hashes(killed) == shard_hashes(reference)


def test_nan_from_an_encoder_is_refused_and_leaves_nothing_complete(tmp_path):
    data = write_beir(tmp_path / "beir", bad_text="this one is NaN! indeed")
    with pytest.raises(InputError, match="NaN"):
        embed_dataset(str(data), [FAKE], tmp_path / "store", shard_rows=64, progress=False)
    assert not list((tmp_path / "store").rglob("manifest.json"))


def test_unknown_model_spec_lists_what_exists(tmp_path):
    data = write_beir(tmp_path / "beir")
    expected = (
        "unknown model spec 'minilm-l7': expected one of minilm-l6, sre-minilm, paraphrase-l3, e5-small-q4, "
        "static-64, mpnet-base (offline short names), a sentence-transformers model name or folder, or "
        "'module:callable' (did you mean 'minilm-l6'?)"
    )
    with pytest.raises(InputError, match=re.escape(expected)):
        embed_dataset(str(data), ["minilm-l7"], tmp_path / "store", progress=False)


@pytest.mark.slow
def test_static_model_kill_and_resume_matches(tmp_path):
    """The same guarantee with a real (fast) offline model."""
    data = write_beir(tmp_path / "beir", n_docs=3000)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "smec.cli", "embed", "--dataset", str(data), "--models", "static-64"]
    ref = tmp_path / "ref"
    subprocess.run(
        [*base, "--out", str(ref), "--shard-rows", "64", "--no-progress"], check=True, env=env, cwd=REPO
    )
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*base, "--out", str(killed), "--shard-rows", "64", "--no-progress", "--batch-size", "8"],
        env=env,
        cwd=REPO,
        stderr=subprocess.DEVNULL,
    )
    while proc.poll() is None and len(list(killed.rglob("shard-*.npy"))) < 5:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    subprocess.run(
        [*base, "--out", str(killed), "--shard-rows", "64", "--no-progress"], check=True, env=env, cwd=REPO
    )
    assert shard_hashes(killed) == shard_hashes(ref)


def test_progress_moves_per_batch_and_rows_keep_their_order(tmp_path, monkeypatch):
    import datamodules.embed as embed_module
    from tests.datamodules.fake_encoder import HashEncoder

    updates: dict[str, list[int]] = {}

    class Bar:
        def __init__(self, total, desc, enabled):
            self.desc = desc
            updates[desc] = []

        def update(self, n):
            updates[self.desc].append(n)

        def close(self):
            pass

    monkeypatch.setattr(embed_module, "_bar", Bar)
    data = write_beir(tmp_path / "beir")
    embed_dataset(str(data), [FAKE], tmp_path / "store", shard_rows=64, batch_size=10, progress=False)
    key = "tests.datamodules.fake_encoder--make"
    corpus = [u for u in updates[f"{key} corpus"] if u]
    # 300 texts in shards of 64, each encoded in batches of 10: the bar moves per batch, never twice for a row.
    assert corpus == ([10] * 6 + [4]) * 4 + [10] * 4 + [4]
    texts = [f"t{i} document number {i} about topic {i % 17}" for i in range(300)]
    store = EmbeddingStore(tmp_path / "store")
    expected = HashEncoder().encode_documents(texts).astype(np.float16)
    np.testing.assert_array_equal(store.array(key, "corpus").read(), expected)

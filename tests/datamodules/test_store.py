import json
import re

import numpy as np
import pytest

from datamodules.errors import StoreError
from datamodules.store import (
    FORMAT_VERSION,
    EmbeddingStore,
    StoreWriter,
    TextSetSpec,
    combine,
    model_key,
)

IDS = {"corpus": [f"d{i}" for i in range(23)], "queries/test": ["q0", "q1", "q2"]}
QRELS = {"test": {"q0": {"d0": 1}, "q1": {"d5": 2, "d6": 0}, "q2": {"d22": 1}}}


def rows_for(model: str, text_set: str, dim: int) -> np.ndarray:
    rng = np.random.default_rng(abs(hash((model, text_set))) % 2**32)
    return rng.standard_normal((len(IDS[text_set]), dim)).astype(np.float32)


def make_writer(path, fingerprint="fp1"):
    return StoreWriter(
        path,
        dataset="tiny",
        fingerprint=fingerprint,
        text_sets=[TextSetSpec(k, v) for k, v in IDS.items()],
        qrels=QRELS,
    )


def write_model(writer, model, dim, data, shard_rows=5, dtype="float16", fail_after=None):
    calls = []

    def encode(start, stop):
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt("simulated crash")
        calls.append((start, stop))
        return data[start:stop]

    writer.write(
        model,
        "corpus",
        dim=dim,
        encode=encode,
        model_info={"spec": model},
        dtype=dtype,
        shard_rows=shard_rows,
    )
    return calls


@pytest.fixture
def store_dir(tmp_path):
    path = tmp_path / "store"
    w = make_writer(path)
    for model, dim in (("a", 8), ("b", 4)):
        for ts in IDS:
            data = rows_for(model, ts, dim)
            w.write(
                model,
                ts,
                dim=dim,
                encode=lambda s, e, d=data: d[s:e],
                model_info={"spec": model},
                shard_rows=5,
            )
    return path


def test_round_trip_reads_across_shards(store_dir):
    store = EmbeddingStore(store_dir)
    assert store.models == ["a", "b"]
    assert store.ids("queries/test") == IDS["queries/test"]
    assert store.qrels("test") == QRELS["test"]
    arr = store.array("a", "corpus")
    expected = rows_for("a", "corpus", 8).astype(np.float16)
    assert arr.shape == (23, 8) and arr.dtype == np.float16
    np.testing.assert_array_equal(arr.read(3, 17), expected[3:17])  # spans shards 0..3
    np.testing.assert_array_equal(arr.take(np.array([22, 0, 7, 7])), expected[[22, 0, 7, 7]])
    buf = np.empty((9, 8), dtype=np.float16)
    np.testing.assert_array_equal(arr.read_into(buf, 4), expected[4:13])
    store.verify()


def test_concat_is_normalised_per_model_then_renormalised(store_dir):
    view = EmbeddingStore(store_dir).concat(["a", "b"], "corpus")
    x = view.to_numpy()
    assert x.shape == (23, 12) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    # each model contributes equally: both blocks have norm 1/sqrt(2) after renormalisation
    np.testing.assert_allclose(np.linalg.norm(x[:, :8], axis=1), 2**-0.5, rtol=1e-3)
    np.testing.assert_array_equal(view.take(np.array([4])), x[[4]])


def test_combine_options():
    a, b = np.ones((2, 3)), 2 * np.ones((2, 1))
    np.testing.assert_allclose(combine([a, b], "none"), [[1, 1, 1, 2]] * 2)
    weighted = combine([a, b], "l2-concat", weights=[1.0, 3.0])
    np.testing.assert_allclose(np.linalg.norm(weighted[:, 3:], axis=1), 3.0)
    with pytest.raises(
        StoreError,
        match=re.escape("normalization 'l3' is unknown; expected one of l2-concat-l2, l2-concat, none"),
    ):
        combine([a], "l3")


def test_interrupted_write_resumes_to_identical_bytes(tmp_path):
    data = rows_for("a", "corpus", 8)
    full = tmp_path / "full"
    write_model(make_writer(full), "a", 8, data)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        write_model(make_writer(part), "a", 8, data, fail_after=2)
    assert not (part / "a" / "corpus" / "manifest.json").exists()
    with pytest.raises(StoreError, match="model 'a' is not in this store; it has no models yet"):
        EmbeddingStore(part).array("a", "corpus")
    calls = write_model(make_writer(part), "a", 8, data)
    assert calls == [(10, 15), (15, 20), (20, 23)]  # only missing shards are encoded
    with pytest.raises(
        StoreError, match=re.escape("embedding of queries/test by 'a' is incomplete (no manifest)")
    ):
        EmbeddingStore(part).array("a", "queries/test")
    for f in sorted((full / "a" / "corpus").iterdir()):
        assert f.read_bytes() == (part / "a" / "corpus" / f.name).read_bytes(), f.name
    assert write_model(make_writer(part), "a", 8, data) == []  # finished: a no-op


def test_nan_rows_are_refused_and_nothing_is_written(tmp_path):
    data = rows_for("a", "corpus", 8)
    data[7, 3] = np.nan
    data[8, 0] = np.inf
    with pytest.raises(
        StoreError, match=re.escape("model 'a' returned NaN/Inf for 2 row(s) of corpus (ids ['d7', 'd8'])")
    ):
        write_model(make_writer(tmp_path / "s"), "a", 8, data)
    files = sorted(p.name for p in (tmp_path / "s" / "a" / "corpus").iterdir())
    assert files == ["shard-00000.npy"]  # the shard before the bad one; no manifest, no partial shard


def test_wrong_shape_from_encoder(tmp_path):
    with pytest.raises(
        StoreError, match=re.escape("model 'a' returned an array of shape (5, 7) for corpus; expected (5, 8)")
    ):
        write_model(make_writer(tmp_path / "s"), "a", 8, rows_for("a", "corpus", 7))


def test_resume_into_store_of_other_dataset_is_refused(store_dir):
    with pytest.raises(StoreError, match="this store was built from dataset 'tiny' with different contents"):
        make_writer(store_dir, fingerprint="other")


def test_truncated_shard(store_dir):
    shard = store_dir / "a" / "corpus" / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-6])
    with pytest.raises(StoreError, match=re.escape(f"{shard}: unreadable or truncated shard")):
        EmbeddingStore(store_dir).array("a", "corpus")


def test_dim_mismatch_between_shard_and_manifest(store_dir):
    manifest_path = store_dir / "a" / "corpus" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["dim"] = 16
    manifest_path.write_text(json.dumps(manifest))
    shard = store_dir / "a" / "corpus" / "shard-00000.npy"
    with pytest.raises(
        StoreError, match=re.escape(f"{shard}: shard has dim 8, but the manifest says dim 16")
    ):
        EmbeddingStore(store_dir).array("a", "corpus")


def test_corrupt_shard_fails_verify(store_dir):
    shard = store_dir / "b" / "queries/test" / "shard-00000.npy"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="sha256 differs from the manifest"):
        EmbeddingStore(store_dir).verify()


def test_newer_format_is_refused(store_dir):
    meta_path = store_dir / "store.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        StoreError, match=re.escape(f"written by a newer smec (store format {FORMAT_VERSION + 1})")
    ):
        EmbeddingStore(store_dir)


def test_unknown_model_and_text_set(store_dir):
    store = EmbeddingStore(store_dir)
    with pytest.raises(StoreError, match=re.escape("model 'zz' is not in this store; it has ['a', 'b']")):
        store.array("zz", "corpus")
    with pytest.raises(StoreError, match=re.escape("text set 'queries/dev' is not in this store")):
        store.array("a", "queries/dev")
    with pytest.raises(StoreError, match="no such store folder"):
        EmbeddingStore(store_dir / "nope")


def test_model_key_is_folder_safe():
    assert model_key("minilm-l6") == "minilm-l6"
    assert model_key("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers__all-MiniLM-L6-v2"
    assert model_key("mypkg.enc:make") == "mypkg.enc--make"
    assert model_key("/models/my-model/") == "my-model"


def test_read_runs_cuts_at_shard_and_buffer_boundaries(store_dir):
    arr = EmbeddingStore(store_dir).array("a", "corpus")  # shards of 5 rows
    expected = rows_for("a", "corpus", 8).astype(np.float16)
    outs = [np.zeros((4, 8), np.float16), np.zeros((7, 8), np.float16)]
    # (rows 3:9 -> stream rows 0:6) crosses a shard and both buffers; (20:23 -> 8:11) ends the array;
    # (12:14 -> 6:8) lands between them; a zero-length run is ignored.
    arr.read_runs(outs, starts=[3, 20, 12, 0], lengths=[6, 3, 2, 0], at=[0, 8, 6, 11])
    stream = np.concatenate(outs)
    np.testing.assert_array_equal(stream, expected[[3, 4, 5, 6, 7, 8, 12, 13, 20, 21, 22]])


def test_read_runs_bad_requests(store_dir):
    arr = EmbeddingStore(store_dir).array("a", "corpus")
    out = np.zeros((4, 8), np.float16)
    with pytest.raises(IndexError, match=re.escape("RunReader: rows outside 0:23 of")):
        arr.read_runs([out], [21], [3], [0])
    with pytest.raises(
        IndexError, match=re.escape("RunReader: destinations outside the 4 rows of the buffers")
    ):
        arr.read_runs([out], [0], [3], [2])
    with pytest.raises(
        ValueError, match=re.escape("RunReader.read: expected a C-contiguous (4, 8) float16 buffer")
    ):
        arr.read_runs([out.astype(np.float32)], [0], [4], [0])


def test_shard_truncated_after_opening(store_dir):
    arr = EmbeddingStore(store_dir).array("a", "corpus")
    shard = store_dir / "a" / "corpus" / "shard-00001.npy"
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size - 8)
    with pytest.raises(
        StoreError, match=re.escape(f"{shard}: shard ended early; truncated after it was opened")
    ):
        arr.read_into(np.zeros((10, 8), np.float16), 0)


def test_sharded_array_pickles_by_reference(store_dir):
    import pickle

    arr = EmbeddingStore(store_dir).array("a", "corpus")
    blob = pickle.dumps(arr)
    assert len(blob) < 2 * len(json.dumps(arr.manifest)) + 500  # the manifest, not 23 x 8 rows of data
    np.testing.assert_array_equal(pickle.loads(blob).read(0, 23), arr.read(0, 23))


def test_will_need_advises_each_shard_range(store_dir, monkeypatch):
    import os

    arr = EmbeddingStore(store_dir).array("a", "corpus")  # shards of 5 rows of 8 float16
    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: calls.append((off, n, advice)))
    arr.will_need(3, 12)
    header = arr._data_offsets[0]
    assert calls == [
        (header + 3 * 16, 2 * 16, os.POSIX_FADV_WILLNEED),
        (header, 5 * 16, os.POSIX_FADV_WILLNEED),
        (header, 2 * 16, os.POSIX_FADV_WILLNEED),
    ]

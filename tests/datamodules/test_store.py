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

import itertools
import json
import re

import numpy as np
import pytest

from datamodules.errors import InputError, StoreError
from datamodules.store.combine import combine
from datamodules.store.layout import FORMAT_VERSION, model_key
from datamodules.store.reader import EmbeddingStore
from datamodules.store.shards import cut_runs
from datamodules.store.writer import StoreWriter, TextSetSpec

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
    for key in (slice(3, 17), slice(None, 4), slice(20, None), slice(-3, None), slice(30, 40)):
        np.testing.assert_array_equal(arr[key], expected[key])  # row slices read like a matrix's
    with pytest.raises(
        TypeError, match=re.escape("ShardedArray[slice(0, 9, 2)]: only row slices [start:stop]")
    ):
        arr[0:9:2]
    np.testing.assert_array_equal(
        combine([arr], "none"), expected.astype(np.float32)
    )  # chunked from the store
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


@pytest.mark.parametrize("normalization", ["l2-concat-l2", "l2-concat", "none"])
def test_combine_in_row_chunks_is_bit_identical_to_the_whole_matrix_recipe(normalization):
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((50, d)).astype(np.float16) for d in (8, 8, 4)]
    parts = [b.astype(np.float32) for b in blocks]
    if normalization != "none":
        parts = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in parts]
    whole = np.concatenate([parts[0], 0.5 * parts[1], parts[2]], axis=1)
    if normalization == "l2-concat-l2":
        whole = whole / np.maximum(np.linalg.norm(whole, axis=1, keepdims=True), 1e-12)
    for chunk_rows in (7, 50, 64):  # chunks that do not divide the rows, one chunk, a chunk larger than them
        out = combine(blocks, normalization, weights=[1.0, 0.5, 1.0], chunk_rows=chunk_rows)
        assert out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, whole)


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


def test_cut_runs_cuts_at_every_edge_inside_a_run_and_nowhere_else():
    # Run 0 (rows 3:11 -> 0:8) crosses source edge 5 and destination edges 4 and 6; run 1 crosses nothing;
    # run 2 (rows 20:30 -> 10:20) crosses source edge 25 and destination edge 15 at the same offset (one cut).
    starts, lengths, at = cut_runs(
        np.array([3, 12, 20]),
        np.array([8, 2, 10]),
        np.array([0, 8, 10]),
        np.array([5, 25]),
        np.array([4, 6, 15]),
    )
    assert starts.tolist() == [3, 5, 7, 9, 12, 20, 25]
    assert lengths.tolist() == [2, 2, 2, 2, 2, 5, 5]
    assert at.tolist() == [0, 2, 4, 6, 8, 10, 15]


def test_cut_runs_equals_a_row_by_row_cut():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        starts, lengths, at = rng.integers(0, 100, n), rng.integers(1, 30, n), rng.integers(0, 100, n)
        src, dst = np.unique(rng.integers(0, 130, 6)), np.unique(rng.integers(0, 130, 6))
        got = cut_runs(starts, lengths, at, src, dst)
        # Row by row: a piece starts at each run's first row and at every row that sits on an edge.
        want = []
        for s, k, a in zip(starts.tolist(), lengths.tolist(), at.tolist()):
            cuts = [0] + [i for i in range(1, k) if s + i in src or a + i in dst] + [k]
            want += [(s + lo, hi - lo, a + lo) for lo, hi in itertools.pairwise(cuts)]
        assert list(zip(*(v.tolist() for v in got))) == want


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


# --- verification: a corrupt or non-finite shard never reaches a number ---------------------------------------


def flip_last_byte(path):
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x10
    path.write_bytes(bytes(raw))


def put_nan_with_a_correct_hash(shard, row, col):
    """A hand edit that also fixes the manifest's sha256: only the NaN scan can catch it."""
    from datamodules.store.verify import sha256_file

    data = np.load(shard)
    data[row, col] = np.nan
    np.save(shard, data)
    manifest_path = shard.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    index = [s["file"] for s in manifest["shards"]].index(shard.name)
    manifest["shards"][index]["sha256"] = sha256_file(shard)
    manifest_path.write_text(json.dumps(manifest))


@pytest.fixture
def fresh_checks(monkeypatch):
    """Forget which shards this process verified, so each test sees the first open."""
    import datamodules.store.verify as verify_module

    monkeypatch.setattr(verify_module, "_VERIFIED", {})
    monkeypatch.delenv("SMEC_VERIFY_STORE", raising=False)


def test_a_flipped_byte_of_the_same_size_is_refused_when_opened(store_dir, fresh_checks):
    shard = store_dir / "a" / "corpus" / "shard-00002.npy"
    size = shard.stat().st_size
    flip_last_byte(shard)
    assert shard.stat().st_size == size
    folder = store_dir / "a" / "corpus"
    with pytest.raises(
        StoreError,
        match=re.escape(
            f"{shard}: sha256 differs from the manifest; the shard is corrupt: delete {folder} and re-run "
            "`smec embed` to write it again"
        ),
    ):
        EmbeddingStore(store_dir).array("a", "corpus")
    EmbeddingStore(store_dir).array("b", "corpus")  # the other model's shards are fine


def test_nan_with_a_correct_hash_is_refused_when_opened(store_dir, fresh_checks):
    shard = store_dir / "a" / "corpus" / "shard-00001.npy"
    put_nan_with_a_correct_hash(shard, 3, 2)
    with pytest.raises(StoreError, match=re.escape(f"{shard}: row 3 holds NaN or Inf: delete ")):
        EmbeddingStore(store_dir).array("a", "corpus")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_without_verification_every_read_scans_for_nan_and_inf(tmp_path, fresh_checks, bad, dtype):
    path = tmp_path / "s"
    write_model(make_writer(path), "a", 8, rows_for("a", "corpus", 8), dtype=dtype)
    shard = path / "a" / "corpus" / "shard-00002.npy"  # rows 10:15
    data = np.load(shard)
    data[4, 7] = bad
    np.save(shard, data)  # same size, wrong hash: verification would refuse it; here it is off
    arr = EmbeddingStore(path, verify=False).array("a", "corpus")
    assert not arr.verified
    np.testing.assert_array_equal(arr.read(0, 14), rows_for("a", "corpus", 8).astype(dtype)[:14])
    message = re.escape(f"{shard}: row 4 holds NaN or Inf (read with verification off)")
    with pytest.raises(StoreError, match=message):
        arr.read()
    with pytest.raises(StoreError, match=message):
        arr.take(np.array([0, 14, 3]))
    outs = [np.zeros((3, 8), dtype), np.zeros((4, 8), dtype)]
    arr.read_runs(outs, [0, 20], [3, 3], [0, 3])  # runs that miss row 14 are fine
    with pytest.raises(StoreError, match=message):
        arr.read_runs(outs, [0, 12], [3, 4], [0, 3])


def test_verification_runs_once_per_shard_and_process(store_dir, fresh_checks, monkeypatch):
    import datamodules.store.shards as shards_module

    calls = []
    real = shards_module.hash_and_scan
    monkeypatch.setattr(shards_module, "hash_and_scan", lambda p, *a: calls.append(p.name) or real(p, *a))
    EmbeddingStore(store_dir).array("a", "corpus")
    assert calls == [f"shard-{i:05d}.npy" for i in range(5)]
    EmbeddingStore(store_dir).array("a", "corpus")
    assert len(calls) == 5  # opened again: not hashed again
    shard = store_dir / "a" / "corpus" / "shard-00001.npy"
    flip_last_byte(shard)  # a file that changed is hashed again (and refused)
    with pytest.raises(StoreError, match="sha256 differs"):
        EmbeddingStore(store_dir).array("a", "corpus")
    assert calls[5:] == ["shard-00001.npy"]
    with pytest.raises(StoreError, match="sha256 differs"):
        EmbeddingStore(store_dir).verify()  # --verify re-hashes everything, whatever this process saw


def test_a_store_just_written_is_trusted_by_its_writer_process(tmp_path, monkeypatch):
    import datamodules.store.shards as shards_module
    import datamodules.store.verify as verify_module

    monkeypatch.setattr(verify_module, "_VERIFIED", {})
    write_model(make_writer(tmp_path / "s"), "a", 8, rows_for("a", "corpus", 8))
    calls = []
    monkeypatch.setattr(shards_module, "hash_and_scan", lambda *a: calls.append(a))
    assert EmbeddingStore(tmp_path / "s").array("a", "corpus").verified
    assert calls == []  # the writer hashed and scanned every shard as it finished


def test_verification_off_by_environment(store_dir, fresh_checks, monkeypatch):
    flip_last_byte(store_dir / "a" / "corpus" / "shard-00000.npy")
    monkeypatch.setenv("SMEC_VERIFY_STORE", "0")
    assert not EmbeddingStore(store_dir).array("a", "corpus").verified
    with pytest.raises(StoreError, match="sha256 differs"):
        EmbeddingStore(store_dir, verify=True).array("a", "corpus")  # an explicit argument wins
    monkeypatch.setenv("SMEC_VERIFY_STORE", "perhaps")
    with pytest.raises(
        InputError,
        match=re.escape("SMEC_VERIFY_STORE='perhaps': expected one of 1, true, yes, on, 0, false, no, off"),
    ):
        EmbeddingStore(store_dir)


def test_a_pickled_array_keeps_its_check(store_dir, fresh_checks, monkeypatch):
    import pickle

    import datamodules.store.shards as shards_module
    import datamodules.store.verify as verify_module

    verified = EmbeddingStore(store_dir).array("a", "corpus")
    unverified = EmbeddingStore(store_dir, verify=False).array("a", "corpus")
    monkeypatch.setattr(verify_module, "_VERIFIED", {})  # a spawned worker starts with no record
    monkeypatch.setattr(shards_module, "hash_and_scan", lambda *a: pytest.fail("the worker re-hashed"))
    assert pickle.loads(pickle.dumps(verified)).verified
    assert not pickle.loads(pickle.dumps(unverified)).verified


def test_a_manifest_without_hashes_cannot_be_verified(store_dir, fresh_checks):
    manifest_path = store_dir / "a" / "corpus" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["shards"][0]["sha256"]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(
        StoreError, match=re.escape("no sha256 for shard-00000.npy, so it cannot be verified")
    ):
        EmbeddingStore(store_dir).array("a", "corpus")
    assert EmbeddingStore(store_dir, verify=False).array("a", "corpus").read().shape == (23, 8)


def test_verified_and_unverified_reads_give_the_same_bytes(store_dir, fresh_checks):
    on = EmbeddingStore(store_dir).array("a", "corpus")
    off = EmbeddingStore(store_dir, verify=False).array("a", "corpus")
    np.testing.assert_array_equal(on.read(), off.read())
    idx = np.array([22, 0, 7, 7])
    np.testing.assert_array_equal(on.take(idx), off.take(idx))


# --- containment: names from data never lead outside the store ----------------------------------------------


@pytest.mark.parametrize("spec", ["..", ".", "/models/x/..", "/", "", "  ", "a\0b"])
def test_model_specs_whose_key_is_not_a_folder_name_are_refused(spec):
    with pytest.raises(StoreError, match=re.escape(f"model spec {spec!r}: its store folder name would be")):
        model_key(spec)


def test_a_manifest_naming_a_shard_outside_its_folder_is_refused(store_dir):
    manifest_path = store_dir / "a" / "corpus" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["file"] = "../../b/corpus/shard-00000.npy"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(
        StoreError, match=re.escape("shard file '../../b/corpus/shard-00000.npy' cannot be a folder")
    ):
        EmbeddingStore(store_dir).array("a", "corpus")


def test_a_store_json_naming_text_sets_outside_the_store_is_refused(store_dir):
    meta_path = store_dir / "store.json"
    meta = json.loads(meta_path.read_text())
    meta["text_sets"].append("queries/../../../etc")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=re.escape("text set 'queries/../../../etc': part '..' cannot be")):
        EmbeddingStore(store_dir)


def test_remove_model_deletes_only_inside_the_store(store_dir):
    writer = make_writer(store_dir)
    with pytest.raises(StoreError, match=re.escape("model key '..' cannot be a folder or file name")):
        writer.remove_model("..")
    assert (store_dir / "a").is_dir() and store_dir.parent.is_dir()
    writer.remove_model("a")
    assert not (store_dir / "a").exists()
    assert EmbeddingStore(store_dir).models == ["b"]


# --- the writer writes nothing before its first shard ---------------------------------------------------------


def test_the_writer_creates_nothing_until_it_writes(tmp_path):
    path = tmp_path / "s"
    writer = make_writer(path)
    assert not path.exists()
    write_model(writer, "a", 8, rows_for("a", "corpus", 8))
    assert sorted(p.name for p in path.iterdir()) == ["a", "ids", "qrels", "store.json"]


def test_the_writer_refuses_a_folder_that_holds_files_but_is_no_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=re.escape(f"{tmp_path}: folder holds files but no store.json")):
        make_writer(tmp_path)
    (tmp_path / "notes.txt").unlink()
    (tmp_path / ".hidden").write_text("")
    make_writer(tmp_path)  # an empty folder (hidden files aside) is fine


def test_a_rerun_with_more_splits_records_their_text_sets(tmp_path):
    path = tmp_path / "s"
    first = StoreWriter(
        path,
        dataset="tiny",
        fingerprint="fp1",
        text_sets=[TextSetSpec("corpus", IDS["corpus"])],
        qrels={},
    )
    write_model(first, "a", 8, rows_for("a", "corpus", 8))
    assert EmbeddingStore(path).text_sets == ["corpus"]
    make_writer(path).write(
        "a",
        "queries/test",
        dim=8,
        encode=lambda s, e: rows_for("a", "queries/test", 8)[s:e],
        model_info={"spec": "a"},
    )
    store = EmbeddingStore(path)
    assert store.text_sets == ["corpus", "queries/test"] and store.splits == ["test"]
    assert store.array("a", "queries/test").shape == (3, 8)


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    import errno
    import os

    from datamodules.files import atomic_write_bytes

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    target = tmp_path / "shard-00000.npy"
    with pytest.raises(OSError) as info:
        atomic_write_bytes(target, b"x" * 100)
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(target))
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_store_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(StoreError, match=re.escape(f"{tmp_path / 'f'}: is a file, not a store folder")):
        EmbeddingStore(tmp_path / "f")
    with pytest.raises(
        StoreError, match=re.escape(f"{tmp_path / 'store.json'}: missing, so {tmp_path} is not")
    ):
        EmbeddingStore(tmp_path)


def test_a_manifest_from_another_folder_is_refused(store_dir):
    import shutil

    shutil.copy(store_dir / "b" / "corpus" / "manifest.json", store_dir / "a" / "corpus" / "manifest.json")
    with pytest.raises(StoreError, match="written for model key 'b', but it is in the folder of 'a'"):
        EmbeddingStore(store_dir).array("a", "corpus")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("dim", "8", "'dim' must be a positive integer, got '8'"),
        ("dtype", "int8", "'dtype' 'int8' is not one of float16, float32"),
        ("rows", -1, "'rows' must be a non-negative integer, got -1"),
        ("shards", [], "'shards' must be a non-empty list"),
    ],
)
def test_a_malformed_manifest_is_one_clear_error(store_dir, field, value, expected):
    manifest_path = store_dir / "a" / "corpus" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest[field] = value
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=re.escape(f"{manifest_path}: {expected}")):
        EmbeddingStore(store_dir).array("a", "corpus")

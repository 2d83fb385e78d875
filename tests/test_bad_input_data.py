"""Bad input on the data side (`smec embed`, `smec eval`'s store, the DataModule): one line, exit 2, nothing
half-written, nothing outside the output folder; and no corrupt or non-finite store ever reaches a number.

Self-contained (its own tiny BEIR folders and stores) so it can be merged with the other verbs' bad-input cases.
Classes: 1 corrupt / non-finite stores, 2 containment, 3 options validated before any output, 4 messages,
5 OS faults, 6 further cases a new user runs into.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from datamodules.errors import StoreError
from datamodules.store.reader import EmbeddingStore
from datamodules.store.verify import sha256_file
from tests.cli_harness import assert_fails_cleanly, run_smec, tree

FAKE = "tests.datamodules.fake_encoder:make"
FAKE_KEY = "tests.datamodules.fake_encoder--make"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    import datamodules.store.verify as verify_module

    monkeypatch.delenv("SMEC_DEBUG", raising=False)
    monkeypatch.delenv("SMEC_VERIFY_STORE", raising=False)
    monkeypatch.setattr(verify_module, "_VERIFIED", {})  # every test opens its shards for the first time


def beir(root: Path, n_docs: int = 40, n_queries: int = 12, **raw: str | bytes) -> Path:
    """A small BEIR folder; ``raw`` replaces a file's bytes (``corpus``, ``queries``, ``test``, ``train``)."""
    (root / "qrels").mkdir(parents=True)
    files = {
        "corpus": "".join(
            json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"document {i} on topic {i % 5}"}) + "\n"
            for i in range(n_docs)
        ),
        "queries": "".join(
            json.dumps({"_id": f"q{i}", "text": f"which document is on topic {i % 5}?"}) + "\n"
            for i in range(n_queries)
        ),
    }
    half = n_queries // 2
    for split, rows in (("train", range(half)), ("test", range(half, n_queries))):
        files[split] = "query-id\tcorpus-id\tscore\n" + "".join(
            f"q{i}\td{(3 * i) % n_docs}\t1\n" for i in rows
        )
    files.update(raw)
    paths = {"corpus": "corpus.jsonl", "queries": "queries.jsonl", "train": "qrels/train.tsv"}
    paths["test"] = "qrels/test.tsv"
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (root / paths.get(name, name)).write_bytes(data)
    return root


def embed_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "embed",
        "--dataset",
        data,
        "--models",
        FAKE,
        "--out",
        out,
        "--shard-rows",
        "8",
        "--no-progress",
        *extra,
    ]


def embedded(tmp_path: Path, name: str = "store") -> Path:
    """A finished store of the fake encoder (float16, shards of 8 rows)."""
    data = tmp_path / f"{name}-data"
    if not data.exists():
        beir(data)
    from datamodules.embed import embed_dataset

    embed_dataset(str(data), [FAKE], tmp_path / name, shard_rows=8, progress=False)
    return tmp_path / name


def eval_args(store: Path, out: Path, *extra: str) -> list[str]:
    return ["eval", "--store", store, "--out", out, "--dims", "4", "--no-pq", "--fit-sample", "40", *extra]


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0x01  # the same size: only the hash can tell
    path.write_bytes(bytes(raw))


def set_value(shard: Path, row: int, value: float, fix_hash: bool) -> None:
    data = np.load(shard)
    data[row, 1] = value
    np.save(shard, data)
    if fix_hash:  # a hand edit that also updates the manifest
        manifest_path = shard.parent / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        for entry in manifest["shards"]:
            if entry["file"] == shard.name:
                entry["sha256"] = sha256_file(shard)
        manifest_path.write_text(json.dumps(manifest))


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


# --- 1. a corrupt or non-finite store never reaches a number -------------------------------------------------


def test_eval_refuses_a_shard_with_a_flipped_byte(tmp_path, capsys):
    store = embedded(tmp_path)
    shard = store / FAKE_KEY / "corpus" / "shard-00002.npy"
    flip_a_byte(shard)
    assert_fails_cleanly(
        capsys,
        eval_args(store, tmp_path / "eval"),
        expect=re.escape(
            f"{shard}: sha256 differs from the manifest; the shard is corrupt: delete {shard.parent} and re-run "
            "`smec embed` to write it again"
        ),
        watch=tmp_path,
    )


def test_the_advice_works_delete_the_folder_and_rerun_embed(tmp_path, capsys):
    store = embedded(tmp_path)
    reference = file_hashes(store)
    shard = store / FAKE_KEY / "corpus" / "shard-00002.npy"
    flip_a_byte(shard)
    shutil.rmtree(shard.parent)
    assert run_smec(capsys, embed_args(tmp_path / "store-data", store)).code == 0
    assert file_hashes(store) == reference
    assert run_smec(capsys, eval_args(store, tmp_path / "eval")).code == 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_eval_refuses_nan_or_inf_even_with_a_correct_hash(tmp_path, capsys, value):
    store = embedded(tmp_path)
    shard = store / FAKE_KEY / "queries" / "test" / "shard-00000.npy"
    set_value(shard, 3, value, fix_hash=True)
    assert_fails_cleanly(
        capsys,
        eval_args(store, tmp_path / "eval"),
        expect=re.escape(f"{shard}: row 3 holds NaN or Inf: delete {shard.parent} and re-run `smec embed`"),
        watch=tmp_path,
    )


@pytest.mark.parametrize("how", ["--no-verify", "SMEC_VERIFY_STORE=0"])
def test_eval_without_verification_still_refuses_nan(tmp_path, capsys, monkeypatch, how):
    store = embedded(tmp_path)
    shard = store / FAKE_KEY / "corpus" / "shard-00001.npy"
    set_value(shard, 5, np.nan, fix_hash=False)  # the hash is wrong too, but nobody checks it
    extra = [how] if how.startswith("--") else []
    if not extra:
        monkeypatch.setenv("SMEC_VERIFY_STORE", "0")
    assert_fails_cleanly(
        capsys,
        eval_args(store, tmp_path / "eval", *extra),
        expect=re.escape(
            f"{shard}: row 5 holds NaN or Inf (read with verification off): delete {shard.parent}"
        ),
        watch=tmp_path,
    )


def test_eval_without_verification_gives_the_same_numbers(tmp_path, capsys):
    store = embedded(tmp_path)
    for name, extra in (("on", []), ("off", ["--no-verify"])):
        assert run_smec(capsys, eval_args(store, tmp_path / name, "--no-trec", *extra)).code == 0
    rows = {n: json.loads((tmp_path / n / "results.json").read_text())["rows"] for n in ("on", "off")}
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in rows["on"]]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in rows["off"]]


@pytest.mark.parametrize("verify", [True, False])
def test_the_training_stream_never_yields_a_nan_batch(tmp_path, verify):
    from datamodules.embedding import EmbeddingDataModule

    store = embedded(tmp_path)
    shard = store / FAKE_KEY / "corpus" / "shard-00003.npy"
    set_value(shard, 0, np.nan, fix_hash=True)
    dm = EmbeddingDataModule(str(store), batch_size=8, verify=verify)
    expected = f"{shard}: row 0 holds NaN or Inf"
    with pytest.raises(StoreError, match=re.escape(expected)):
        for batch in dm.train_dataloader():  # verification on: refused when the loader opens the store
            assert np.isfinite(batch["x"][0].numpy()).all()
    with pytest.raises(StoreError, match=re.escape(expected)):
        dm.eval_data("test")


def test_fit_refuses_a_corrupt_store_before_training(tmp_path, capsys):
    import yaml

    store = embedded(tmp_path)
    flip_a_byte(store / FAKE_KEY / "corpus" / "shard-00000.npy")
    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "configs" / "mrl.yaml").read_text())
    cfg["model"]["init_args"].update(output_dim=4, dims=[2, 4])
    cfg["data"]["init_args"].update(store=str(store), models=None, batch_size=8)
    cfg["trainer"].update(
        default_root_dir=str(tmp_path / "run"), max_epochs=1, enable_progress_bar=False, callbacks=None
    )
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(cfg))
    assert_fails_cleanly(
        capsys,
        ["fit", "--config", tmp_path / "recipe.yaml"],
        expect=re.escape("shard-00000.npy: sha256 differs from the manifest"),
        watch=store,
    )
    assert not (tmp_path / "run" / "config.yaml").exists()  # the DataModule's setup failed before that


def test_embed_refuses_nan_from_an_encoder_and_finishes_nothing(tmp_path, capsys):
    bad = json.dumps({"_id": "d0", "text": "this one is NaN! indeed"}) + "\n"
    data = beir(tmp_path / "data", corpus=bad + json.dumps({"_id": "d1", "text": "fine"}) + "\n", n_docs=2)
    out = tmp_path / "store"
    assert_fails_cleanly(
        capsys,
        embed_args(data, out),
        expect=re.escape(f"encoder '{FAKE}' returned non-finite values (NaN or inf) for 1 of 2 texts"),
        watch=tmp_path,
        may_change=lambda p: p.startswith("store") and not p.endswith("manifest.json"),
    )
    assert not list(out.rglob("manifest.json"))


def test_predict_writer_refuses_non_finite_outputs(tmp_path):
    """`smec predict` writes through StoreWriter.write, which refuses NaN/Inf rows."""
    from types import SimpleNamespace

    import torch

    from datamodules.embedding import EmbeddingDataModule
    from smec.prediction import StorePredictionWriter

    dm = EmbeddingDataModule(str(embedded(tmp_path)))
    out = tmp_path / "predicted"
    predictions = []
    for ts in dm.predict_text_sets:
        rows = torch.ones(len(dm.store.ids(ts)), 4)
        if ts == "queries/test":
            rows[2, 1] = float("nan")
        predictions.append([rows])
    writer = StorePredictionWriter(str(out), name="toy")
    with pytest.raises(
        StoreError, match=re.escape("model 'toy' returned NaN/Inf for 1 row(s) of queries/test")
    ):
        writer.write_on_epoch_end(SimpleNamespace(datamodule=dm), SimpleNamespace(), predictions, None)
    assert (out / "toy" / "corpus" / "manifest.json").exists()  # the sets before it are complete
    assert not (out / "toy" / "queries" / "test" / "manifest.json").exists()
    with pytest.raises(StoreError, match="incomplete"):
        EmbeddingStore(out).array("toy", "queries/test")


# --- 2. containment: no name from the input leads outside the store --------------------------------------------


@pytest.mark.parametrize("form", ["{model}/..", "..", ".", "./", "{model}/sub/../.."])
def test_a_model_spec_whose_folder_name_is_dot_or_dotdot_writes_nothing(tmp_path, capsys, form):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    data = beir(tmp_path / "data")
    spec = form.format(model=model)
    args = embed_args(data, tmp_path / "out" / "store")
    args[args.index(FAKE)] = spec
    assert_fails_cleanly(
        capsys, args, expect=re.escape(f"model spec {spec!r}: its store folder name would be"), watch=tmp_path
    )


@pytest.mark.parametrize(("file", "split"), [("..tsv", "."), ("...tsv", ".."), (".tsv", "")])
def test_a_qrels_file_name_that_is_no_split_name_writes_nothing(tmp_path, capsys, file, split):
    data = beir(tmp_path / "data")
    (data / "qrels" / file).write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert_fails_cleanly(
        capsys,
        embed_args(data, tmp_path / "store"),
        expect=re.escape(
            f"{data / 'qrels' / file}: split name {split!r} (the file name without .tsv) cannot"
        ),
        watch=tmp_path,
    )


def test_a_dataset_path_with_no_folder_name_needs_out(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_fails_cleanly(
        capsys,
        ["embed", "--dataset", "/", "--models", FAKE, "--no-progress"],
        expect=re.escape("--dataset '/': no folder name to store it under (empty); give --out"),
        watch=tmp_path,
    )


@pytest.mark.parametrize(
    ("where", "change", "expect"),
    [
        (
            "store.json",
            lambda m: m["text_sets"].append("queries/../../x"),
            "text set 'queries/../../x': part '..' cannot be a folder or file name",
        ),
        ("store.json", lambda m: m["splits"].append(".."), "split name '..' cannot be a folder or file name"),
        (
            f"{FAKE_KEY}/corpus/manifest.json",
            lambda m: m["shards"][0].update(file="../../../outside.npy"),
            "shard file '../../../outside.npy' cannot be a folder or file name",
        ),
    ],
)
def test_a_store_whose_names_lead_outside_is_refused(tmp_path, capsys, where, change, expect):
    store = embedded(tmp_path)
    edit_json(store / where, change)
    assert_fails_cleanly(
        capsys, eval_args(store, tmp_path / "eval"), expect=re.escape(expect), watch=tmp_path
    )


def test_a_model_folder_linked_outside_the_store_is_refused(tmp_path, capsys):
    store = embedded(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(store / FAKE_KEY, elsewhere)
    (store / FAKE_KEY).symlink_to(elsewhere)
    assert_fails_cleanly(
        capsys, eval_args(store, tmp_path / "eval"), expect=re.escape(f", outside {store}"), watch=tmp_path
    )


# --- 3. options are validated before any output exists -------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--batch-size", "0"], "--batch-size: expected a positive integer, got 0"),
        (["--batch-size", "-4"], "--batch-size: expected a positive integer, got -4"),
        (["--shard-rows", "0"], "--shard-rows: expected a positive integer, got 0"),
        (["--shard-rows", "-3"], "--shard-rows: expected a positive integer, got -3"),
        (
            ["--splits", "nope"],
            "qrels/nope.tsv: missing for requested split 'nope'; available splits: test, train",
        ),
        (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
        (["--batch-size", "many"], "argument --batch-size: invalid int value: 'many'"),
    ],
)
def test_bad_embed_options_leave_nothing(tmp_path, capsys, extra, expect):
    data = beir(tmp_path / "data")
    assert_fails_cleanly(
        capsys, embed_args(data, tmp_path / "store", *extra), expect=re.escape(expect), watch=tmp_path
    )


@pytest.mark.parametrize(
    ("models", "expect"),
    [
        (["minilm-l7"], "unknown model spec 'minilm-l7': expected one of minilm-l6"),
        (
            [FAKE, "minilm-l7"],
            "unknown model spec 'minilm-l7'",
        ),  # the second spec is checked before the first runs
        ([FAKE, FAKE], "--models lists the same model twice"),
        (["no_such_module_xyz:make"], "plug-in 'no_such_module_xyz:make': cannot import module"),
        (
            ["tests.datamodules.fake_encoder:nope"],
            "module 'tests.datamodules.fake_encoder' has no attribute 'nope'",
        ),
        (["./no/such/model"], "model folder './no/such/model' does not exist"),
    ],
)
def test_bad_model_specs_leave_nothing(tmp_path, capsys, models, expect):
    data = beir(tmp_path / "data")
    args = embed_args(data, tmp_path / "store")
    i = args.index(FAKE)
    args[i : i + 1] = models
    assert_fails_cleanly(capsys, args, expect=re.escape(expect), watch=tmp_path)


def test_a_model_that_fails_to_load_leaves_no_skeleton(tmp_path, capsys, monkeypatch):
    from datamodules.errors import EncoderError
    from tests.datamodules import fake_encoder

    def broken(dim: int = 8):
        raise EncoderError("weights.bin: truncated; expected 4 MiB")

    monkeypatch.setattr(fake_encoder, "make", broken)
    data = beir(tmp_path / "data")
    assert_fails_cleanly(
        capsys, embed_args(data, tmp_path / "store"), expect="weights.bin: truncated", watch=tmp_path
    )


def test_out_that_is_a_file(tmp_path, capsys):
    data = beir(tmp_path / "data")
    (tmp_path / "store").write_text("not a folder")
    assert_fails_cleanly(
        capsys,
        embed_args(data, tmp_path / "store"),
        expect=re.escape(f"{tmp_path / 'store'}: exists and is not a folder"),
        watch=tmp_path,
    )


def test_out_that_is_a_folder_of_other_files(tmp_path, capsys):
    data = beir(tmp_path / "data")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("mine")
    assert_fails_cleanly(
        capsys,
        embed_args(data, tmp_path / "home"),
        expect=re.escape(f"{tmp_path / 'home'}: folder holds files but no store.json, so it is not a store"),
        watch=tmp_path,
    )


def test_embedding_into_a_store_of_another_dataset(tmp_path, capsys):
    store = embedded(tmp_path)
    other = beir(tmp_path / "other", n_docs=41)
    assert_fails_cleanly(
        capsys,
        embed_args(other, store),
        expect=re.escape("this store was built from dataset 'store-data' with different contents"),
        watch=tmp_path,
    )


@pytest.mark.parametrize("verb", ["embed", "eval"])
def test_a_store_from_a_newer_format(tmp_path, capsys, verb):
    store = embedded(tmp_path)
    edit_json(store / "store.json", lambda m: m.update(format_version=99))
    args = embed_args(tmp_path / "store-data", store) if verb == "embed" else eval_args(store, tmp_path / "e")
    assert_fails_cleanly(
        capsys, args, expect=re.escape("written by a newer smec (store format 99)"), watch=tmp_path
    )


# --- 4. messages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "where"),
    [
        ("corpus", b'{"_id": "d0", "text": "a"}\n{"_id": "d1", "text": "caf\xe9"}\n', "corpus.jsonl:2"),
        ("queries", b'{"_id": "q0", "text": "a"}\n\n{"_id": "q1", "text": "\xff"}\n', "queries.jsonl:3"),
        ("test", b"query-id\tcorpus-id\tscore\nq7\td1\t1\nq8\td\x902\t1\n", "test.tsv:3"),
    ],
)
def test_a_line_that_is_not_utf8_is_named_by_its_number(tmp_path, capsys, name, raw, where):
    data = beir(tmp_path / "data", **{name: raw})
    assert_fails_cleanly(
        capsys,
        embed_args(data, tmp_path / "store"),
        expect=re.escape(where) + r": not UTF-8 text \(byte 0x[0-9a-f]{2} at column \d+\)",
        watch=tmp_path,
    )


@pytest.mark.parametrize("bad_id", ["d 1", "d\t1", "d1\n"])
@pytest.mark.parametrize("name", ["corpus", "queries"])
def test_ids_with_whitespace_are_refused_at_load(tmp_path, capsys, bad_id, name):
    prefix = "d" if name == "corpus" else "q"
    lines = [json.dumps({"_id": f"{prefix}0", "text": "x"}), json.dumps({"_id": bad_id, "text": "y"})]
    data = beir(tmp_path / "data", **{name: "\n".join(lines) + "\n"})
    assert_fails_cleanly(
        capsys,
        embed_args(data, tmp_path / "store"),
        expect=re.escape(f'{name}.jsonl:2: "_id" {bad_id!r} contains whitespace; ids must be single tokens'),
        watch=tmp_path,
    )


def test_a_store_with_whitespace_in_ids_writes_no_trec_run(tmp_path, capsys):
    store = embedded(tmp_path)
    edit_json(store / "ids" / "corpus.json", lambda ids: ids.__setitem__(3, "d 3"))
    assert_fails_cleanly(
        capsys,
        eval_args(store, tmp_path / "eval"),
        expect=re.escape("cannot write document id 'd 3' into a TREC run"),
        watch=tmp_path,
    )


def test_store_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "store").write_text("")
    assert_fails_cleanly(
        capsys,
        eval_args(tmp_path / "store", tmp_path / "eval"),
        expect=re.escape(f"{tmp_path / 'store'}: is a file, not a store folder"),
        watch=tmp_path,
    )


def test_store_path_that_is_a_folder_but_no_store(tmp_path, capsys):
    (tmp_path / "store").mkdir()
    assert_fails_cleanly(
        capsys,
        eval_args(tmp_path / "store", tmp_path / "eval"),
        expect=re.escape(
            f"{tmp_path / 'store' / 'store.json'}: missing, so {tmp_path / 'store'} is not a store"
        ),
        watch=tmp_path,
    )


# --- 5. OS faults: one line naming the file; a rerun finishes byte-identical ---------------------------------


def reference_store(tmp_path: Path, capsys, data: Path) -> dict[str, str]:
    assert run_smec(capsys, embed_args(data, tmp_path / "reference")).code == 0
    return file_hashes(tmp_path / "reference")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; see the simulated case")
def test_a_read_only_out_folder(tmp_path, capsys):
    data = beir(tmp_path / "data")
    expected = reference_store(tmp_path, capsys, data)
    out = tmp_path / "store"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert_fails_cleanly(
            capsys,
            embed_args(data, out),
            expect=re.escape(f"{out / 'store.json'}: Permission denied"),
            watch=tmp_path,
        )
    finally:
        out.chmod(stat.S_IRWXU)
    assert run_smec(capsys, embed_args(data, out)).code == 0
    assert file_hashes(out) == expected


def test_a_read_only_out_folder_simulated(tmp_path, capsys, monkeypatch):
    """As the real case, for root (whom chmod does not stop): creating files in the folder is refused."""
    import tempfile

    data = beir(tmp_path / "data")
    expected = reference_store(tmp_path, capsys, data)
    out = tmp_path / "store"
    out.mkdir()
    real = tempfile.mkstemp

    def read_only(*args, dir=None, prefix="", suffix="", **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(out.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2z3{suffix}")
        return real(*args, dir=dir, prefix=prefix, suffix=suffix, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert_fails_cleanly(
        capsys,
        embed_args(data, out),
        expect=re.escape(f"{out / 'store.json'}: Permission denied"),
        watch=tmp_path,
    )
    monkeypatch.setattr(tempfile, "mkstemp", real)
    assert run_smec(capsys, embed_args(data, out)).code == 0
    assert file_hashes(out) == expected


def test_a_full_disk_mid_embed_then_a_rerun_is_byte_identical(tmp_path, capsys, monkeypatch):
    data = beir(tmp_path / "data")
    expected = reference_store(tmp_path, capsys, data)
    out = tmp_path / "store"
    real_fsync = os.fsync
    shards = []

    def disk_full_at_the_third_shard(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".shard-" in name:
            shards.append(name)
            if len(shards) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")  # a write names no file
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_at_the_third_shard)
    before = tree(tmp_path)
    assert_fails_cleanly(
        capsys,
        embed_args(data, out),
        expect=re.escape(f"{out / FAKE_KEY / 'corpus' / 'shard-00002.npy'}: No space left on device"),
        watch=tmp_path,
        may_change=lambda p: p.startswith("store"),  # its own folder: the complete shards before the fault
    )
    left = set(tree(tmp_path)) - set(before)
    assert {"store/tests.datamodules.fake_encoder--make/corpus/shard-00001.npy", "store/store.json"} <= left
    assert not [p for p in left if p.endswith((".tmp", "manifest.json", "shard-00002.npy"))]
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert run_smec(capsys, embed_args(data, out)).code == 0
    assert file_hashes(out) == expected


# --- 6. further cases a new user runs into ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expect"),
    [
        ({"corpus": "\n"}, "corpus.jsonl: empty corpus; expected at least one document"),
        (
            {"corpus": '{"_id": "d0", "text": "a"}\n{"_id": "d0", "text": "b"}\n'},
            "corpus.jsonl:2: duplicate corpus id 'd0' (first on line 1)",
        ),
        (
            {"queries": '{"_id": "q0", "text": "a"}\n{"_id": "q0", "text": "b"}\n'},
            "queries.jsonl:2: duplicate query id 'q0' (first on line 1)",
        ),
        (
            {"test": "query-id\tcorpus-id\tscore\nq7\td999\t1\n"},
            "test.tsv:2: document id 'd999' is not in the corpus",
        ),
        (
            {"test": "query-id\tcorpus-id\tscore\nq99\td1\t1\n"},
            "test.tsv:2: query id 'q99' is not in queries.jsonl",
        ),
        ({"test": "query-id\tcorpus-id\tscore\n"}, "test.tsv: no judgements; expected at least one"),
        (
            {"test": "query-id\tcorpus-id\tscore\nq7\td1\thigh\n"},
            "test.tsv:2: score 'high' is not an integer",
        ),
        ({"corpus": '{"_id": "d0", "text": "a"\n'}, "corpus.jsonl:1: invalid JSON"),
        ({"queries.jsonl.gz": b"not gzip"}, "queries.jsonl and queries.jsonl.gz exist; keep one"),
    ],
)
def test_malformed_datasets_leave_nothing(tmp_path, capsys, files, expect):
    data = beir(tmp_path / "data", **files)
    assert_fails_cleanly(
        capsys, embed_args(data, tmp_path / "store"), expect=re.escape(expect), watch=tmp_path
    )


def test_a_missing_dataset_folder(tmp_path, capsys):
    assert_fails_cleanly(
        capsys,
        embed_args(tmp_path / "nowhere", tmp_path / "store"),
        expect=re.escape(f"{tmp_path / 'nowhere'}: not a built-in dataset"),
        watch=tmp_path,
    )


@pytest.mark.parametrize(
    ("where", "change", "expect"),
    [
        (
            f"{FAKE_KEY}/corpus/manifest.json",
            lambda m: m.update(dim=9),
            "shard has dim 8, but the manifest says dim 9",
        ),
        (
            f"{FAKE_KEY}/corpus/manifest.json",
            lambda m: m.update(rows=41),
            "shard rows add up to 40, expected 41",
        ),
        (
            f"{FAKE_KEY}/corpus/manifest.json",
            lambda m: m.pop("dim"),
            "'dim' must be a positive integer, got None",
        ),
        (
            f"{FAKE_KEY}/corpus/manifest.json",
            lambda m: m.update(model_key="other"),
            "written for model key 'other', but it is in the folder of",
        ),
        ("ids/corpus.json", lambda ids: ids.pop(), "40 rows but 39 ids for corpus"),
        ("store.json", lambda m: m.pop("models"), "'models' must be an object"),
        ("store.json", lambda m: m.update(dataset=[]), "no 'dataset' with a 'name'"),
    ],
)
def test_a_manifest_that_does_not_match_its_shards(tmp_path, capsys, where, change, expect):
    store = embedded(tmp_path)
    edit_json(store / where, change)
    assert_fails_cleanly(
        capsys, eval_args(store, tmp_path / "eval"), expect=re.escape(expect), watch=tmp_path
    )


@pytest.mark.parametrize(
    ("damage", "expect"),
    [
        (lambda s: (s / "store.json").write_text("{ not json"), "store manifest is not valid JSON"),
        (lambda s: (s / "store.json").write_text("[1, 2]"), "a JSON list, not an object"),
        (
            lambda s: (s / FAKE_KEY / "corpus" / "shard-00001.npy").unlink(),
            "shard-00001.npy: shard listed in the manifest is missing",
        ),
        (
            lambda s: (s / FAKE_KEY / "corpus" / "shard-00001.npy").write_bytes(
                (s / FAKE_KEY / "corpus" / "shard-00001.npy").read_bytes()[:-10]
            ),
            "shard-00001.npy: unreadable or truncated shard",
        ),
        (lambda s: (s / "qrels" / "test.json").unlink(), "test.json: missing qrels of test"),
    ],
)
def test_a_damaged_store(tmp_path, capsys, damage, expect):
    store = embedded(tmp_path)
    damage(store)
    assert_fails_cleanly(
        capsys, eval_args(store, tmp_path / "eval"), expect=re.escape(expect), watch=tmp_path
    )


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--models", "zz"], "--models ['zz']: not in"),
        (["--split", "dev"], "text set 'queries/dev' is not in this store"),
    ],
)
def test_eval_names_what_the_store_lacks(tmp_path, capsys, extra, expect):
    store = embedded(tmp_path)
    assert_fails_cleanly(
        capsys, eval_args(store, tmp_path / "eval", *extra), expect=re.escape(expect), watch=tmp_path
    )

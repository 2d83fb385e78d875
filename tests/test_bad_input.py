"""Bad input and faults, verb by verb: one line, exit 2, nothing half-written, nothing outside the output folder.

Every case goes through ``tests/cli_harness.py`` ``assert_fails_cleanly(..., watch=tmp_path)``: exit status 2,
exactly one error line naming the file or option and what was expected, no traceback, and nothing created,
removed or modified under the test's folder (a fault mid-run may leave only complete, resumable files in its own
output folder). Commands run in-process. The classes of issue 11, in order:

Data side (`smec embed`, the store `smec eval` and the DataModule read):
  1 corrupt or non-finite stores never reach a number; 2 containment: paths built from model specs, split and
  text-set names and ids stay inside the store; 3 options validated before any output exists; 4 messages (file
  and line); 5 OS faults (read-only folder, full disk, then a byte-identical rerun); 6 further cases.
Training verbs, checkpoints, predict, the evaluation grid and `smec compare`:
  7 configs and options; 8 checkpoints (never unpickled, matched to the config); 9 predict and evaluation
  outputs found unwritable before any work, writer names contained; 10 grid points that cannot be computed;
  11 `smec compare`: method arguments validated before anything runs, a fixed typo reruns.
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
from types import SimpleNamespace

# Lightning adds a logging.StreamHandler on sys.stderr when first imported: imported here, at collection, it
# writes to the session's stderr, not to one test's capsys stream (closed after that test, and a "Logging error"
# traceback in every later test's output).
import lightning.pytorch  # noqa: F401
import numpy as np
import pytest
import yaml

from datamodules.errors import StoreError
from datamodules.store.reader import EmbeddingStore
from datamodules.store.verify import sha256_file
from tests.cli_harness import assert_fails_cleanly, changes, run_smec, tree
from tests.conftest import build_store
from tests.datamodules.test_embed import FAKE, embed_argv

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
    return embed_argv(data, out, *extra, shard_rows=8)


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
        expect=re.escape(f"--out: {tmp_path / 'store'} exists and is not a folder"),
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
            expect=re.escape(f"--out: {out} is not writable"),
            watch=tmp_path,
        )
    finally:
        out.chmod(stat.S_IRWXU)
    assert run_smec(capsys, embed_args(data, out)).code == 0
    assert file_hashes(out) == expected


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_out_folder_nobody_can_create_is_found_before_a_model_loads(tmp_path, capsys, monkeypatch):
    """/proc refuses new entries even to root (whom ``os.access`` always says yes to): found by trying."""
    import datamodules.embed

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the output folder was checked")

    monkeypatch.setattr(datamodules.embed, "_load", no_loading)
    assert_fails_cleanly(
        capsys,
        embed_args(beir(tmp_path / "data"), "/proc/smec-store"),
        expect=re.escape("--out: /proc/smec-store cannot be created: /proc is not writable"),
        watch=tmp_path,
    )


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


# ==========================================================================================================
# Training verbs, checkpoints, predict, the evaluation grid, smec compare


# Lightning adds a logging.StreamHandler on sys.stderr when first imported: imported here, at collection, it
# writes to the session's stderr, not to one test's capsys stream (closed after that test, and a "Logging error"
# traceback in every later test's output).
REPO = Path(__file__).resolve().parents[1]
VERBS = ("fit", "validate", "test", "predict")
TRAINED = ("validate", "test", "predict")


def recipe(folder: Path, store: Path, root: Path, name: str = "recipe.yaml", **model: object) -> Path:
    """configs/mrl.yaml shrunk to the tiny store: an 8-d decoder, one epoch, checkpoints, CSV logs."""
    cfg = yaml.safe_load((REPO / "configs" / "mrl.yaml").read_text())
    cfg["fit_callbacks"] = {"enabled": False}  # only the checkpoint below
    cfg["model"]["init_args"].update(output_dim=8, dims=[2, 4, 8], **model)
    cfg["data"]["init_args"].update(store=str(store), models=None, batch_size=8)
    cfg["trainer"].update(
        default_root_dir=str(root),
        max_epochs=1,
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
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One finished 1-epoch MRL fit, shared read-only by the cases that need a checkpoint."""
    from smec.lightning_cli import run_lightning_cli

    base = tmp_path_factory.mktemp("fitted")
    store = build_store(base / "store")
    root = base / "run"
    run_lightning_cli(["fit", "--config", str(recipe(base, store, root))])
    return SimpleNamespace(
        base=base,
        store=store,
        root=root,
        config=root / "config.yaml",
        last=root / "checkpoints" / "last.ckpt",
    )


@pytest.fixture
def fresh(tmp_path):
    """A store and a recipe whose run folder (inside tmp_path) does not exist yet."""
    store = build_store(tmp_path / "store")
    return SimpleNamespace(
        store=store, root=tmp_path / "run", recipe=recipe(tmp_path, store, tmp_path / "run")
    )


def fails(capsys, argv, expect: str, watch: Path, *untouched: Path, **kw):
    """assert_fails_cleanly, and the folders in ``untouched`` (a shared fitted run) stay as they were."""
    before = [tree(folder) for folder in untouched]
    outcome = assert_fails_cleanly(capsys, argv, expect=expect, watch=watch, **kw)
    for folder, was in zip(untouched, before):
        assert not changes(was, tree(folder)), f"{folder} changed"
    return outcome


class Evil:
    """Unpickling this calls ``open(marker, "w")``: a file appears if a loader runs code from the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state_dict": {}, "epoch": 0, "payload": Evil(marker)}, path)
    return path


# --------------------------------------------------------------------------------------------------------
# the parser: config files, unknown keys, wrong types


@pytest.mark.parametrize("verb", VERBS)
def test_bad_yaml_names_the_file(verb, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [\n")
    fails(
        capsys,
        [verb, "--config", bad],
        r"--config \S*bad\.yaml: not valid YAML: .* at line 2, column 1$",
        tmp_path,
    )


@pytest.mark.parametrize("verb", VERBS)
def test_a_config_file_that_does_not_exist(verb, tmp_path, capsys):
    fails(
        capsys,
        [verb, "--config", tmp_path / "nowhere.yaml"],
        r"--config \S*nowhere\.yaml: no such file$",
        tmp_path,
    )


@pytest.mark.parametrize(
    ("text", "got"), [("", "an empty file"), ("- a\n- b\n", "a list")], ids=["empty", "list"]
)
def test_a_config_file_that_is_not_a_mapping(text, got, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    fails(
        capsys,
        ["fit", "--config", path],
        rf"expected a mapping of sections \(model, data, trainer, ...\), got {got}$",
        tmp_path,
    )


@pytest.mark.parametrize(
    ("where", "key", "expect"),
    [
        ("yaml", "bogus", r"recipe\.yaml: bogus: not an option of smec fit$"),
        (
            "yaml",
            "trainer.max_epoch",
            r"recipe\.yaml: trainer\.max_epoch: not an option of smec fit \(did you mean 'max_epochs'\?\)",
        ),
        (
            "yaml",
            "model.init_args.lrr",
            r"recipe\.yaml: model\.init_args\.lrr: smec\.systems\.mrl\.MRLDecoderModule has no argument 'lrr' \(did you mean 'lr'\?\)",
        ),
        (
            "yaml",
            "data.init_args.batchsize",
            r"data\.init_args\.batchsize: .*EmbeddingDataModule has no argument 'batchsize' \(did you mean 'batch_size'\?\)",
        ),
        (
            "cli",
            "model.init_args.lrr",
            r"^smec fit: error: --model\.init_args\.lrr: .*MRLDecoderModule has no argument 'lrr'",
        ),
        # no abbreviations: a prefix of --trainer.max_epochs is not silently taken for it
        ("cli", "trainer.max_epoch", r"--trainer\.max_epoch: not an option of smec fit"),
        ("cli", "bogus", r"--bogus: not an option of smec fit"),
    ],
)
def test_an_unknown_key_names_it_and_where_it_was_set(where, key, expect, fresh, tmp_path, capsys):
    argv = ["fit", "--config", fresh.recipe]
    if where == "yaml":
        cfg = yaml.safe_load(fresh.recipe.read_text())
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = 3
        fresh.recipe.write_text(yaml.safe_dump(cfg))
    else:
        argv += [f"--{key}", "3"]
    fails(capsys, argv, expect, tmp_path)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--trainer.max_epochs", "abc"], r"--trainer\.max_epochs: expected int or null, got abc$"),
        (
            ["--model.init_args.output_dim", "abc"],
            r"--model\.init_args\.output_dim: expected int or null, got abc$",
        ),
        (
            ["--model.init_args.dims=[2, x]"],
            r"--model\.init_args\.dims: expected list\[int\] or null, got \[2, 'x'\]$",
        ),
        (["--data.init_args.batch_size", "x"], r"--data\.init_args\.batch_size: expected int, got x$"),
        (["--seed_everything", "abc"], r"--seed_everything: expected bool or int, got abc$"),
    ],
)
def test_a_wrong_value_type_is_one_line(args, expect, fresh, tmp_path, capsys):
    fails(capsys, ["fit", "--config", fresh.recipe, *args], expect, tmp_path)


def test_a_wrong_value_type_in_a_file_names_the_file(fresh, tmp_path, capsys):
    cfg = yaml.safe_load(fresh.recipe.read_text())
    cfg["trainer"]["callbacks"][0]["init_args"]["every_n_epochs"] = "often"
    fresh.recipe.write_text(yaml.safe_dump(cfg))
    expect = r"recipe\.yaml: trainer\.callbacks\.init_args\.every_n_epochs: expected int or null, got often$"
    fails(capsys, ["fit", "--config", fresh.recipe], expect, tmp_path)


def test_a_class_that_does_not_exist(fresh, tmp_path, capsys):
    expect = r"--model: cannot import the class 'smec\.systems\.mrl\.Nope' \(module 'smec\.systems\.mrl' has no attribute 'Nope'\)"
    fails(capsys, ["fit", "--config", fresh.recipe, "--model", "smec.systems.mrl.Nope"], expect, tmp_path)


def test_fit_without_a_recipe(tmp_path, capsys):
    expect = r"missing data, model: give a recipe with --config \(e\.g\. configs/mrl\.yaml\)"
    fails(capsys, ["fit", f"--trainer.default_root_dir={tmp_path / 'run'}"], expect, tmp_path)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        # raised by the constructor, which jsonargparse wrapped in its Union report (was a traceback)
        (
            ["--model.init_args.dims=[2, 4, 16]"],
            r"model\.dims must all be <= output_dim=8, got \[2, 4, 16\]$",
        ),
        (["--data.init_args.batch_size", "0"], r"data\.batch_size: expected a positive integer, got 0$"),
        (["--data.init_args.models=[nope]"], r"model 'nope' is not in this store; it has \['m1', 'm2'\]"),
    ],
)
def test_a_value_the_constructor_refuses(args, expect, fresh, tmp_path, capsys):
    fails(capsys, ["fit", "--config", fresh.recipe, *args], expect, tmp_path)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--trainer.accelerator", "gpu"], r"trainer: No supported gpu backend found!$"),
        (["--trainer.devices", "0"], r"trainer: `Trainer\(devices='0'\)` value is not a valid input"),
        (["--trainer.max_epochs", "-5"], r"trainer: `max_epochs` must be a non-negative integer or -1"),
        (["--seed_everything", "-1"], r"seed_everything: -1 is not in bounds"),
    ],
    ids=["gpu-on-cpu", "devices-0", "max_epochs", "seed"],
)
def test_an_impossible_trainer_setting(args, expect, fresh, tmp_path, capsys):
    fails(capsys, ["fit", "--config", fresh.recipe, *args], expect, tmp_path)


@pytest.mark.parametrize("verb", VERBS)
def test_a_store_that_does_not_exist(verb, fresh, tmp_path, capsys):
    argv = [verb, "--config", fresh.recipe, f"--data.init_args.store={tmp_path / 'nostore'}"]
    fails(capsys, argv, r"nostore: no such store folder; create one with `smec embed`", tmp_path)


def test_a_run_folder_under_a_file(fresh, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    argv = ["fit", "--config", fresh.recipe, f"--trainer.default_root_dir={tmp_path / 'notes.txt' / 'run'}"]
    expect = r"trainer\.default_root_dir: cannot create \S+/run: \S+notes\.txt is not a folder$"
    fails(capsys, argv, expect, tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder(fresh, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        argv = ["fit", "--config", fresh.recipe, f"--trainer.default_root_dir={locked / 'run'}"]
        fails(
            capsys,
            argv,
            r"trainer\.default_root_dir: \S+ cannot be created: \S+locked is not writable",
            tmp_path,
        )
    finally:
        locked.chmod(0o755)


def test_weights_only_false_is_refused(fitted, tmp_path, capsys):
    argv = ["predict", "--config", fitted.config, "--ckpt_path", fitted.last, "--weights_only", "false"]
    fails(
        capsys,
        argv,
        r"--weights_only false: smec reads checkpoints with weights_only=true only",
        tmp_path,
        fitted.base,
    )


# --------------------------------------------------------------------------------------------------------
# checkpoints: not a checkpoint, crafted, from another configuration, missing


def not_a_checkpoint(kind: str, tmp_path: Path) -> tuple[Path, str]:
    if kind == "readme":
        path = tmp_path / "README.md"
        path.write_text("# not a checkpoint\n")
        return path, r"README\.md is not a Lightning checkpoint \(not a file torch\.save wrote\)$"
    if kind == "empty":
        path = tmp_path / "empty.ckpt"
        path.write_bytes(b"")
        return path, r"empty\.ckpt is not a Lightning checkpoint \(an empty file\)$"
    if kind == "folder":
        path = tmp_path / "ckpts"
        path.mkdir()
        return path, r"ckpts is not a file \(expected a Lightning checkpoint, \*\.ckpt\)$"
    if kind == "state_dict":
        import torch

        path = tmp_path / "weights.pt"
        torch.save({"decoder.weight": torch.zeros(2, 2)}, path)
        return path, r"weights\.pt is not a Lightning checkpoint \(no state_dict\)$"
    return tmp_path / "missing.ckpt", r"missing\.ckpt: no such file$"


@pytest.mark.parametrize("kind", ["readme", "empty", "folder", "state_dict", "missing"])
@pytest.mark.parametrize("verb", VERBS)
def test_a_ckpt_path_that_is_not_a_checkpoint(verb, kind, fitted, tmp_path, capsys):
    path, expect = not_a_checkpoint(kind, tmp_path)
    fails(
        capsys,
        [verb, "--config", fitted.config, "--ckpt_path", path],
        r"--ckpt_path: \S*" + expect,
        tmp_path,
        fitted.base,
    )


@pytest.mark.parametrize("verb", VERBS)
def test_a_crafted_checkpoint_never_runs(verb, fitted, tmp_path, capsys):
    import torch

    marker = tmp_path / "ran"
    evil = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    probe = tmp_path / "probe"
    probe.mkdir()
    torch.load(crafted_checkpoint(probe / "evil.ckpt", probe / "ran"), weights_only=False)
    assert (probe / "ran").exists()  # the payload is live: an unrestricted load runs it
    expect = r"--ckpt_path: \S*evil\.ckpt: refused to load: it holds \S*open, which is not a type smec checkpoints contain"
    fails(capsys, [verb, "--config", fitted.config, "--ckpt_path", evil], expect, tmp_path, fitted.base)
    assert not marker.exists()


def test_a_crafted_checkpoint_as_extend_from_never_runs(fresh, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    cfg = yaml.safe_load((REPO / "configs" / "smec.yaml").read_text())
    cfg["model"]["init_args"].update(
        dims=[8, 4, 2], smrl={"epochs_per_stage": [0, 0, 1]}, sxbm={"memory_size": 32, "k": 4}
    )
    cfg["model"]["init_args"]["extend_from"] = str(evil)
    cfg["data"]["init_args"].update(store=str(fresh.store), models=None, batch_size=8)
    cfg["trainer"].update(default_root_dir=str(fresh.root), callbacks=[], enable_progress_bar=False)
    path = tmp_path / "smec.yaml"
    path.write_text(yaml.safe_dump(cfg))
    expect = r"model\.extend_from: \S*evil\.ckpt: refused to load: it holds \S*open"
    # the model reads it in its setup hook: held-back loggers leave no csv/ folder behind either
    fails(capsys, ["fit", "--config", path], expect, tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("verb", VERBS)
def test_a_checkpoint_of_another_configuration(verb, fitted, tmp_path, capsys):
    """Asked for other sizes than the checkpoint was trained with: every differing key, both values."""
    argv = [verb, "--config", fitted.config, "--ckpt_path", "last", "--model.init_args.dims=[2, 8]"]
    expect = (
        rf"--ckpt_path {re.escape(str(fitted.last))} was trained with other settings than this config: "
        r"model\.init_args\.dims: checkpoint \[2, 4, 8\], config \[2, 8\] \(run with its own config, --config "
    )
    fails(capsys, argv, expect, tmp_path, fitted.base)


def test_predict_with_another_input_than_the_checkpoint(fitted, tmp_path, capsys):
    """A 10-d checkpoint and a config reading 6-d input: named, instead of silently predicting."""
    argv = [
        "predict",
        "--config",
        fitted.config,
        "--ckpt_path",
        fitted.last,
        "--data.init_args.models=[m1]",
        "--model.init_args.output_dim=6",
        "--model.init_args.dims=[2, 6]",
    ]
    expect = (
        r"model\.init_args\.dims: checkpoint \[2, 4, 8\], config \[2, 6\]; model\.init_args\.input_dim: "
        r"checkpoint 10, config 6; model\.init_args\.output_dim: checkpoint 8, config 6; "
        r"data\.init_args\.models: checkpoint \['m1', 'm2'\], config \['m1'\]"
    )
    fails(capsys, argv, expect, tmp_path, fitted.base)


def test_resuming_from_another_store(fitted, tmp_path, capsys):
    other = build_store(tmp_path / "other", seed=1)
    argv = ["fit", "--config", fitted.config, "--ckpt_path", fitted.last, f"--data.init_args.store={other}"]
    fails(
        capsys,
        argv,
        r"data\.init_args\.store: checkpoint '\S+/store', config '\S+/other'",
        tmp_path,
        fitted.base,
    )


@pytest.mark.parametrize("verb", TRAINED)
def test_evaluating_without_a_checkpoint(verb, fresh, tmp_path, capsys):
    """No checkpoint given: an error, not the metrics / embeddings of an untrained model."""
    expect = rf"--ckpt_path: smec {verb} needs a trained checkpoint, e\.g\. --ckpt_path best"
    fails(capsys, [verb, "--config", fresh.recipe], expect, tmp_path)


@pytest.mark.parametrize("ckpt", ["last", "best"])
@pytest.mark.parametrize("verb", TRAINED)
def test_last_or_best_when_the_run_has_no_checkpoint(verb, ckpt, fresh, tmp_path, capsys):
    expect = (
        r"--ckpt_path last: no last\*\.ckpt in \S+/run/checkpoints$"
        if ckpt == "last"
        else (r"--ckpt_path best: no checkpoint found in \S+/run/checkpoints \(expected \S+last\.ckpt\)$")
    )
    fails(capsys, [verb, "--config", fresh.recipe, "--ckpt_path", ckpt], expect, tmp_path)


# --------------------------------------------------------------------------------------------------------
# predict's writer: names, existing output, unwritable output


def writer(output_dir: Path, **init: object) -> list[str]:
    args = [
        "--trainer.callbacks+=smec.prediction.StorePredictionWriter",
        f"--trainer.callbacks.output_dir={output_dir}",
    ]
    return args + [
        f"--trainer.callbacks.{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in init.items()
    ]


@pytest.fixture
def no_prediction(monkeypatch):
    """Predicting at all fails the test: the checks must come first."""
    from smec.systems.mrl import MRLDecoderModule

    def predict_step(*args, **kwargs):
        raise AssertionError("predicted before the output was checked")

    monkeypatch.setattr(MRLDecoderModule, "predict_step", predict_step)


@pytest.mark.parametrize("name", ["..", ".", "../escape", "a/b", ""])
def test_a_writer_name_that_leaves_the_output_folder(name, fitted, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("the output's parent: must survive overwrite")
    out = tmp_path / "out"
    out.mkdir()
    argv = [
        "predict",
        "--config",
        fitted.config,
        "--ckpt_path",
        fitted.last,
        *writer(out, name=name, overwrite=True),
    ]
    expect = rf"StorePredictionWriter\.name: {re.escape(repr(name))} is not a plain name \(expected one folder name"
    fails(capsys, argv, expect, tmp_path, fitted.base)


def test_a_writer_target_that_exists_is_found_before_predicting(fitted, tmp_path, capsys, no_prediction):
    out = tmp_path / "out"
    (out / "mrl").mkdir(parents=True)
    argv = ["predict", "--config", fitted.config, "--ckpt_path", fitted.last, *writer(out)]
    fails(
        capsys,
        argv,
        r"\S+/out/mrl exists; set overwrite: true on StorePredictionWriter",
        tmp_path,
        fitted.base,
    )


def test_an_unwritable_predict_output_is_found_before_predicting(fitted, tmp_path, capsys, no_prediction):
    (tmp_path / "notes.txt").write_text("x")
    argv = [
        "predict",
        "--config",
        fitted.config,
        "--ckpt_path",
        fitted.last,
        *writer(tmp_path / "notes.txt" / "out"),
    ]
    expect = r"StorePredictionWriter\.output_dir: cannot create \S+/out: \S+notes\.txt is not a folder$"
    fails(capsys, argv, expect, tmp_path, fitted.base)


# --------------------------------------------------------------------------------------------------------
# systems whose output would not be narrower than their input


def test_the_mrl_recipe_on_a_narrow_store(fresh, tmp_path, capsys):
    """configs/mrl.yaml's 512-d decoder on a 10-d store would expand its input: refused."""
    argv = [
        "fit",
        "--config",
        REPO / "configs" / "mrl.yaml",
        f"--data.init_args.store={fresh.store}",
        "--data.init_args.models=[m1, m2]",
        f"--trainer.default_root_dir={fresh.root}",
    ]
    expect = r"model\.output_dim=512 is wider than the input \(model\.input_dim=10, the data's width\)"
    fails(capsys, argv, expect, tmp_path)


def test_the_smec_recipe_on_a_narrow_store(fresh, tmp_path, capsys):
    argv = [
        "fit",
        "--config",
        REPO / "configs" / "smec.yaml",
        f"--data.init_args.store={fresh.store}",
        "--data.init_args.models=[m1, m2]",
        f"--trainer.default_root_dir={fresh.root}",
    ]
    expect = (
        r"model\.dims \[512, 256, 128, 64, 32\]: sizes \[32, 64, 128, 256, 512\] are wider than the input"
    )
    fails(capsys, argv, expect, tmp_path)


def test_a_setting_checked_in_setup_leaves_no_run_folder(fresh, tmp_path, capsys):
    """SMEC's rank loss without (query, document) pairs is found in its setup hook, after Lightning would have
    created the loggers' folders: nothing is left behind."""
    argv = [
        "fit",
        "--config",
        REPO / "configs" / "smec.yaml",
        f"--data.init_args.store={fresh.store}",
        "--data.init_args.models=[m1, m2]",
        "--data.init_args.mode=unsupervised",
        "--model.init_args.dims=[8, 4]",
        f"--trainer.default_root_dir={fresh.root}",
    ]
    fails(
        capsys,
        argv,
        r"model\.rank_weight / model\.infonce_weight > 0 need \(query, document\) pairs",
        tmp_path,
    )


# --------------------------------------------------------------------------------------------------------
# smec eval: the grid and the output folder


@pytest.fixture
def no_grid(monkeypatch):
    import smec.evaluation.store_grid as store_grid

    def fail(*args, **kwargs):
        raise AssertionError("computed before the output was checked")

    monkeypatch.setattr(store_grid, "baseline_rows", fail)
    monkeypatch.setattr(store_grid, "compressed_rows", fail)


def test_an_unwritable_eval_output_is_found_before_computing(tmp_path, capsys, no_grid):
    store = build_store(tmp_path / "store")
    (tmp_path / "notes.txt").write_text("x")
    argv = ["eval", "--store", store, "--out", tmp_path / "notes.txt" / "eval"]
    fails(capsys, argv, r"--out: cannot create \S+/eval: \S+notes\.txt is not a folder$", tmp_path)


def test_an_eval_output_that_is_a_file(tmp_path, capsys, no_grid):
    store = build_store(tmp_path / "store")
    (tmp_path / "results").write_text("x")
    fails(
        capsys,
        ["eval", "--store", store, "--out", tmp_path / "results"],
        r"--out: \S+results exists and is not a folder$",
        tmp_path,
    )


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            ["--dims", "2", "16"],
            r"--dims \[16\]: wider than the input \(the concatenation of m1, m2 has 10 dims\)$",
        ),
        (
            ["--dims", "2", "4", "--precisions", "binary"],
            r"--dims \[2, 4\] with --precisions binary: binary codes need a multiple of 8 dims$",
        ),
        (["--dims", "0"], r"--dims: expected positive integers, got \[0\]$"),
        (["--models", "m3"], r"--models \['m3'\]: not in \S+store \(it holds \['m1', 'm2'\]\)$"),
        (["--fit-sample", "0"], r"argument --fit-sample: expected an integer >= 1, got 0"),
        (["--pq-max-bits", "4"], r"argument --pq-max-bits: expected an integer >= 8, got 4"),
        (["--precisions", "int3"], r"unknown precision 'int3'"),
        (["--int-scoring", "both"], r"argument --int-scoring: invalid choice: 'both'"),
    ],
    ids=[
        "dims-wider",
        "binary-odd",
        "dims-0",
        "unknown-model",
        "fit-sample-0",
        "pq-bits",
        "precision",
        "scoring",
    ],
)
def test_an_eval_grid_that_cannot_be_computed(args, expect, tmp_path, capsys):
    store = build_store(tmp_path / "store")
    fails(capsys, ["eval", "--store", store, "--out", tmp_path / "eval", "--no-pq", *args], expect, tmp_path)


def test_eval_without_out_is_one_line(tmp_path, capsys):
    store = build_store(tmp_path / "store")
    fails(
        capsys,
        ["eval", "--store", store],
        r"the following arguments are required: --out \(see smec eval --help\)$",
        tmp_path,
    )


def test_an_automatic_grid_says_once_what_it_left_out(tmp_path, capsys):
    """The default dims (32 … 256) on a 10-d store, binary at widths that are not whole bytes: one warning."""
    store = build_store(tmp_path / "store")
    outcome = run_smec(
        capsys, ["eval", "--store", store, "--out", tmp_path / "eval", "--no-pq", "--fit-sample", "100"]
    )
    assert outcome.code == 0, outcome.err
    warned = [line for line in outcome.err.splitlines() if "warning" in line]
    assert warned == [
        "smec eval: warning: left out of the grid: default dims [32, 64, 128, 256] (wider than the input: the "
        "concatenation of m1, m2 has 10 dims); model:m1 binary at dims [6] (binary codes need a multiple of 8 "
        "dims); model:m2 binary at dims [4] (binary codes need a multiple of 8 dims); concat binary at dims [10] "
        "(binary codes need a multiple of 8 dims)"
    ]


# --------------------------------------------------------------------------------------------------------
# smec compare: method arguments, grid widths, options


def experiment(tmp_path: Path, **overrides: object) -> Path:
    """A comparison of one MRL fit on a tiny BEIR folder embedded by the model-free 8-d fake encoder."""
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    (data / "corpus.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "text": f"document {i} on topic {i % 7}"}) + "\n" for i in range(40)
        )
    )
    (data / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"about topic {i % 7}"}) + "\n" for i in range(12))
    )
    for split, queries in (("train", range(0, 6)), ("dev", range(6, 9)), ("test", range(9, 12))):
        rows = "".join(f"q{i}\td{(3 * i) % 40}\t1\n" for i in queries)
        (data / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    fit = recipe(tmp_path, tmp_path / "store", tmp_path / "unused", name="tiny-mrl.yaml")
    cfg = {
        "name": "tiny",
        "dataset": str(data),
        "store": str(tmp_path / "store"),
        "models": [FAKE],
        "dims": [2, 4],
        "precisions": ["float32"],
        "trainer": [str(REPO / "configs/trainer/cpu.yaml")],
        "logger": "csv",
        "baselines": {"pq": False, "fit_sample": 40},
        "methods": [{"name": "mrl", "config": str(fit), "args": {"trainer.max_epochs": 1}}],
    }
    cfg.update(overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def compare_argv(tmp_path: Path, config: Path, *extra: str) -> list:
    return ["compare", "--config", config, "--out", tmp_path / "run", "--no-progress", *extra]


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            {"model.init_args.lrr": 0.01},
            r"--model\.init_args\.lrr: smec\.systems\.mrl\.MRLDecoderModule has no argument 'lrr' \(did you mean 'lr'\?\)$",
        ),
        ({"trainer.max_epoch": 3}, r"--trainer\.max_epoch: not an option of smec fit"),
        (
            {"model.init_args.dims": "many"},
            r"--model\.init_args\.dims: expected list\[int\] or null, got many$",
        ),
    ],
    ids=["model-typo", "trainer-typo", "wrong-type"],
)
def test_a_typo_in_a_method_argument_is_found_before_embedding(args, expect, tmp_path, capsys):
    methods = [{"name": "mrl", "config": str(tmp_path / "tiny-mrl.yaml"), "args": args}]
    config = experiment(tmp_path, methods=methods)
    fails(
        capsys,
        compare_argv(tmp_path, config),
        rf"^smec compare: error: \S+tiny\.yaml: method mrl: {expect[0:]}",
        tmp_path,
    )


def test_compare_dims_wider_than_a_method_are_found_before_fitting(tmp_path, capsys):
    config = experiment(tmp_path, dims=[2, 4, 8])
    methods = yaml.safe_load(config.read_text())["methods"]
    methods[0]["args"] = {"model.init_args.output_dim": 4, "model.init_args.dims": [2, 4]}
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "methods": methods}))
    # The system's own check of its eval_dims (the grid), run before any fit starts.
    expect = r"method mrl: model\.eval_dims\b"
    # The embed step ran (its store is reused by the rerun) and the run folder holds its state; no fit started.
    fails(
        capsys,
        compare_argv(tmp_path, config),
        expect,
        tmp_path,
        may_change=lambda p: p.startswith(("store", "run")),
    )
    assert not (tmp_path / "run" / "mrl").exists()


def test_compare_dims_wider_than_the_input(tmp_path, capsys):
    config = experiment(tmp_path, dims=[2, 16])
    expect = (
        r"dims \[16\] are wider than the input: tests\.datamodules\.fake_encoder:make concatenate to 8 dims$"
    )
    fails(
        capsys,
        compare_argv(tmp_path, config),
        expect,
        tmp_path,
        may_change=lambda p: p.startswith(("store", "run")),
    )
    assert not (tmp_path / "run" / "mrl").exists()


def test_compare_binary_at_dims_that_are_not_whole_bytes(tmp_path, capsys):
    config = experiment(tmp_path, precisions=["float32", "binary"])
    expect = r"dims \[2, 4\] with precision binary: binary codes need a multiple of 8 dims"
    fails(capsys, compare_argv(tmp_path, config), expect, tmp_path)


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_compare_jobs_must_be_positive(jobs, tmp_path, capsys):
    config = experiment(tmp_path)
    fails(
        capsys,
        compare_argv(tmp_path, config, "--jobs", jobs),
        r"argument --jobs: expected an integer >= 1",
        tmp_path,
    )


def test_compare_fresh_deletes_only_a_comparison(tmp_path, capsys):
    config = experiment(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "thesis.tex").write_text("not a comparison")
    expect = r"--fresh: \S+/run does not hold a comparison \(no state\.json\): not deleting it"
    fails(capsys, compare_argv(tmp_path, config, "--fresh"), expect, tmp_path)


def test_compare_unwritable_out(tmp_path, capsys):
    config = experiment(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    argv = ["compare", "--config", config, "--out", tmp_path / "notes.txt" / "run", "--no-progress"]
    fails(capsys, argv, r"--out: cannot create \S+/run: \S+notes\.txt is not a folder$", tmp_path)


def test_a_verb_the_system_does_not_have(fitted, tmp_path, capsys):
    """MRL has no test_step: Lightning's MisconfigurationException, raised once the run starts, is one line."""
    argv = ["test", "--config", fitted.config, "--ckpt_path", fitted.last]
    fails(capsys, argv, r"No `test_step\(\)` method defined to run `Trainer\.test`", tmp_path, fitted.base)

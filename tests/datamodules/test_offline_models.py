"""Offline models: package paths, atomic one-time builds, split-zip reassembly, ONNX BERT conversion."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datamodules import offline_models as om
from datamodules.errors import EncoderError

# --- cache dir and package paths ----------------------------------------------------------------------------------


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(om.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert om.default_cache_dir() == tmp_path / "home" / ".cache" / "smec" / "models"
    monkeypatch.setenv(om.CACHE_ENV, str(tmp_path / "env"))
    assert om.default_cache_dir() == tmp_path / "env"
    assert om.resolve_cache_dir(None) == tmp_path / "env"
    assert om.resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_package_file_errors():
    with pytest.raises(
        EncoderError,
        match=re.escape(
            "offline model 'minilm-l6' needs the PyPI package 'no-such-dist-xyz', which is not installed: "
            'run `pip install -e ".[offline-models]"`'
        ),
    ):
        om.package_file("no-such-dist-xyz", "x", model="minilm-l6")
    with pytest.raises(
        EncoderError,
        match=re.escape("offline model 'mpnet-base': package 'numpy' is installed but has no 'no/such'"),
    ):
        om.package_file("numpy", "no/such", model="mpnet-base")


def test_unknown_offline_name():
    with pytest.raises(
        EncoderError, match=re.escape("unknown offline model 'x': expected one of minilm-l6, ")
    ):
        om.source_packages("x")
    with pytest.raises(
        EncoderError, match="offline model 'e5-small-q4' is not a sentence-transformers model"
    ):
        om.sentence_transformers_dir("e5-small-q4")


def test_cached_build_dir_names_package_and_converter_version(tmp_path, monkeypatch):
    monkeypatch.setattr(om, "package_version", lambda dist: "9.9")
    assert (
        om.cached_build_dir("paraphrase-l3", tmp_path)
        == tmp_path / f"paraphrase-l3-9.9-c{om.CONVERTER_VERSION}"
    )


# --- atomic builds -----------------------------------------------------------------------------------------------


def _write_model(out: Path) -> None:
    (out / "weights.bin").write_bytes(b"w" * 100)


def test_build_once_builds_then_reuses(tmp_path):
    target = tmp_path / "cache" / "m-1-c1"
    calls = []

    def build(out):
        calls.append(out)
        _write_model(out)

    assert om.build_once(target, build, source={"pkg": "1"}) == target
    assert (target / "weights.bin").read_bytes() == b"w" * 100
    marker = json.loads((target / om.BUILD_MARKER).read_text())
    assert marker == {"converter_version": om.CONVERTER_VERSION, "source": {"pkg": "1"}}
    assert om.build_once(target, build, source={}) == target
    assert len(calls) == 1
    # Built in a hidden sibling, which is gone.
    assert calls[0].parent == target.parent and calls[0].name.startswith(".m-1-c1.tmp-")
    assert sorted(p.name for p in target.parent.iterdir()) == ["m-1-c1"]


def test_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "m"

    def build(out):
        _write_model(out)
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError, match="killed half-way"):
        om.build_once(target, build, source={})
    assert list(tmp_path.iterdir()) == []


def test_incomplete_target(tmp_path):
    target = tmp_path / "m"
    target.mkdir()  # empty: replaced by the rename
    assert om.build_once(target, _write_model, source={}) == target and om.is_complete(target)
    other = tmp_path / "n"
    other.mkdir()
    (other / "stray").write_text("copied by hand, no marker")
    with pytest.raises(
        EncoderError, match=re.escape(f"cannot move the converted model into {other}: ")
    ) as err:
        om.build_once(other, _write_model, source={})
    assert str(err.value).endswith(f"(it has no {om.BUILD_MARKER}), delete it and retry")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "n"]


def test_concurrent_build_uses_the_winner(tmp_path):
    target = tmp_path / "m"

    def build(out):
        # Another process finishes first, while this one is still building.
        target.mkdir()
        (target / "weights.bin").write_bytes(b"winner")
        (target / om.BUILD_MARKER).write_text("{}")
        _write_model(out)

    assert om.build_once(target, build, source={}) == target
    assert (target / "weights.bin").read_bytes() == b"winner"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "m"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    host = om._host_tag()
    stale = tmp_path / f".m.tmp-{host}-{dead_pid}-abcd1234"
    alive = tmp_path / f".m.tmp-{host}-{os.getpid()}-abcd1234"
    other_host = tmp_path / f".m.tmp-otherhost-{dead_pid}-abcd1234"
    for d in (stale, alive, other_host):
        d.mkdir()
    om.build_once(target, _write_model, source={})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m", alive.name, other_host.name])


def test_unwritable_cache_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(
        EncoderError, match=re.escape(f"cannot create the model cache directory {blocker / 'sub'}")
    ):
        om.build_once(blocker / "sub" / "m", _write_model, source={})


# --- split zips ---------------------------------------------------------------------------------------------------


def _split(data: bytes, folder: Path, sizes: list[int]) -> list[Path]:
    parts, start = [], 0
    for i, size in enumerate([*sizes, len(data) - sum(sizes)]):
        part = folder / f"x.zip.{i:03d}"
        part.write_bytes(data[start : start + size])
        parts.append(part)
        start += size
    return parts


def test_concatenated_file_reads_and_seeks_across_parts(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    parts = _split(data, tmp_path, [100, 0, 450])
    with om.ConcatenatedFile(parts) as f:
        assert f.read() == data
        assert f.seek(95) == 95 and f.read(10) == data[95:105]
        assert f.seek(-3, io.SEEK_END) == 997 and f.read(10) == data[997:]
        f.seek(540)
        assert f.seek(20, io.SEEK_CUR) == 560 and f.read(1) == data[560:561]
        assert f.tell() == 561
        with pytest.raises(ValueError, match="negative seek position"):
            f.seek(-1)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


def test_extract_split_zip(tmp_path):
    payload = np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    data = _zip(
        {
            "model/modules.json": b"[]",
            "model/1_Pooling/config.json": b"{}",
            "model/weights.bin": payload,
            "model/desktop.ini": b"junk",
            "model/1_Pooling/Desktop.ini": b"junk",
            "elsewhere/x": b"ignored",
        }
    )
    parts = _split(data, tmp_path, [1000, 1000, 1000])
    out = tmp_path / "out"
    out.mkdir()
    om.extract_split_zip(parts, "model/", out)
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert found == ["1_Pooling/config.json", "modules.json", "weights.bin"]
    assert (out / "weights.bin").read_bytes() == payload


def test_extract_split_zip_refuses_escaping_members(tmp_path):
    parts = _split(_zip({"model/modules.json": b"[]", "model/../../evil": b"x"}), tmp_path, [50])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(
        EncoderError, match=re.escape("zip member 'model/../../evil' would be written outside")
    ):
        om.extract_split_zip(parts, "model/", out)
    assert not (tmp_path / "evil").exists()


def test_extract_split_zip_errors(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "ok").mkdir()
    bad = _split(b"not a zip at all" * 10, tmp_path / "bad", [40])
    with pytest.raises(EncoderError, match="do not form a valid zip"):
        om.extract_split_zip(bad, "model/", out)
    parts = _split(_zip({"other/modules.json": b"[]"}), tmp_path / "ok", [30])
    with pytest.raises(EncoderError, match=re.escape("hold no 'model/modules.json'")):
        om.extract_split_zip(parts, "model/", out)


# --- ONNX BERT -> state dict ------------------------------------------------------------------------------------------


def _tiny_graph(with_bias: bool = True):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)  # exported as [in, out]
    b = rng.normal(size=3).astype(np.float32)
    emb = rng.normal(size=(5, 4)).astype(np.float32)
    prefix = "model.0.auto_model."
    inits = [
        numpy_helper.from_array(w, "onnx::MatMul_7"),
        numpy_helper.from_array(emb, prefix + "embeddings.word_embeddings.weight"),
    ]
    nodes = [helper.make_node("MatMul", ["x", "onnx::MatMul_7"], ["mm"], name="/q/MatMul")]
    if with_bias:
        inits.append(numpy_helper.from_array(b, prefix + "encoder.layer.0.attention.self.query.bias"))
        nodes.append(
            helper.make_node("Add", [prefix + "encoder.layer.0.attention.self.query.bias", "mm"], ["y"])
        )
    else:
        nodes.append(helper.make_node("Relu", ["mm"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        initializer=inits,
    )
    assert onnx.checker.check_graph(graph) is None
    return graph, w, b, emb


def test_onnx_state_dict_names_and_transposes_anonymous_weights():
    graph, w, b, emb = _tiny_graph()
    state = om.onnx_bert_state_dict(graph)
    assert sorted(state) == [
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.attention.self.query.bias",
        "encoder.layer.0.attention.self.query.weight",
    ]
    np.testing.assert_array_equal(state["encoder.layer.0.attention.self.query.weight"], w.T)
    np.testing.assert_array_equal(state["encoder.layer.0.attention.self.query.bias"], b)
    np.testing.assert_array_equal(state["embeddings.word_embeddings.weight"], emb)
    assert all(v.flags["C_CONTIGUOUS"] and v.dtype == np.float32 for v in state.values())


def test_onnx_state_dict_refuses_unmapped_weights():
    graph, *_ = _tiny_graph(with_bias=False)
    with pytest.raises(
        EncoderError,
        match=re.escape("ONNX graph: cannot tell which layer the weights ['onnx::MatMul_7'] belong to"),
    ):
        om.onnx_bert_state_dict(graph)


def test_writer_checks_vocabulary_size(tmp_path):
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(EncoderError, match="has 2 tokens but the model has 5 word embeddings"):
        om.write_bert_sentence_transformers(
            tmp_path, {}, {"hidden_size": 4, "vocab_size": 5}, tmp_path, max_seq_length=8
        )
    with pytest.raises(EncoderError, match=r"has no vocab\.txt"):
        om.write_bert_sentence_transformers(
            tmp_path, {}, {"hidden_size": 4, "vocab_size": 5}, tmp_path / "none", max_seq_length=8
        )


# --- the real conversions (slow) ------------------------------------------------------------------------------------


def _require(name: str) -> None:
    missing = [d for d in om.OFFLINE_MODELS[name].packages if om.package_version(d) is None]
    if missing:
        pytest.skip(f"{name} needs {missing} ({om.OFFLINE_MODELS[name].install})")


PARAPHRASES = [
    ("A man is playing a guitar.", "Someone plays an acoustic guitar."),
    ("The cat is sleeping on the sofa.", "A cat naps on the couch."),
    ("The stock market fell sharply today.", "Share prices dropped steeply today."),
]


@pytest.mark.slow
def test_paraphrase_l3_conversion_matches_the_onnx_graph(tmp_path):
    _require("paraphrase-l3")
    from onnx.reference import ReferenceEvaluator
    from sentence_transformers import SentenceTransformer

    folder = om.paraphrase_l3_dir(tmp_path)
    assert folder == om.cached_build_dir("paraphrase-l3", tmp_path) and om.is_complete(folder)
    config = json.loads((folder / "config.json").read_text())
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["hidden_size"]) == (3, 12, 384)
    assert json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"] == 128

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    texts = [t for pair in PARAPHRASES for t in pair] + ["", "Ünïcödé café", "dictionary " * 200]
    ours = model.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
    tok = model.tokenizer(
        texts, padding=True, truncation=True, max_length=model.max_seq_length, return_tensors="np"
    )
    feeds = {k: tok[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    reference = ReferenceEvaluator(str(om.paraphrase_l3_onnx())).run(["461"], feeds)[0]
    assert np.abs(ours - reference).max() < 1e-5

    unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    sims = unit @ unit.T
    pairs = [sims[2 * i, 2 * i + 1] for i in range(len(PARAPHRASES))]
    others = [
        sims[2 * i, 2 * j + 1] for i in range(len(PARAPHRASES)) for j in range(len(PARAPHRASES)) if i != j
    ]
    assert min(pairs) > max(others) + 0.2


@pytest.mark.slow
def test_mpnet_reassembly(tmp_path):
    _require("mpnet-base")
    folder = om.mpnet_dir(tmp_path)
    assert om.is_complete(folder)
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert (folder / "model.safetensors").stat().st_size > 400_000_000
    assert not list(folder.rglob("desktop.ini"))
    marker = json.loads((folder / om.BUILD_MARKER).read_text())
    assert marker["source"] == {d: importlib.metadata.version(d) for d in om.MPNET_PARTS}

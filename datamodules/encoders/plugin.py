"""``module:callable`` plug-ins: encoders that are not torch models (an API client, a C engine)."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.encoders.base import PROBE, as_embeddings, check_texts, package_versions
from datamodules.errors import EncoderError

# `module:callable` where module is a dotted import path and callable a (dotted) attribute of it.
_PLUGIN_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_plugin(spec: str) -> bool:
    return _PLUGIN_RE.match(spec) is not None and not Path(spec).is_dir()


def plugin_factory(spec: str) -> Any:
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
        standard = {
            "device": device,
            "max_length": max_length,
            "query_prompt": query_prompt,
            "document_prompt": document_prompt,
            "cache_dir": str(cache_dir) if cache_dir is not None else None,
        }
        obj, passed = _build(spec, standard, options)
        self._queries, self._documents = _encode_methods(spec, obj)
        self.obj = obj
        self.options = dict(options or {})
        # Prompts the callable took are its business; the others are applied here.
        self.query_prompt = "" if "query_prompt" in passed else (query_prompt or "")
        self.document_prompt = "" if "document_prompt" in passed else (document_prompt or "")
        self._given_prompts = {"query_prompt": query_prompt, "document_prompt": document_prompt}
        self.max_length = max_length
        self.dim = self._declared_dim()

    def _declared_dim(self) -> int:
        """The plug-in's ``dim``, or (when it declares none) the width of its output for one probe text."""
        declared = getattr(self.obj, "dim", None)
        if declared is None:
            probe = np.asarray(self._documents([self.document_prompt + PROBE]))
            if probe.ndim != 2 or probe.shape[0] != 1:
                raise EncoderError(
                    f"plug-in '{self.spec}' returned shape {probe.shape} for 1 text; expected (1, dim)"
                )
            declared = probe.shape[1]
        try:
            dim = int(declared)
        except (TypeError, ValueError):
            raise EncoderError(f"plug-in '{self.spec}' has a non-integer dim {declared!r}") from None
        if dim < 1:
            raise EncoderError(f"plug-in '{self.spec}' has dim {dim}; expected a positive integer")
        return dim

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed queries with the plug-in (in batches of ``batch_size``)."""
        return self._encode(texts, batch_size, self._queries, self.query_prompt)

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed documents with the plug-in (in batches of ``batch_size``)."""
        return self._encode(texts, batch_size, self._documents, self.document_prompt)

    def _encode(self, texts: Sequence[str], batch_size: int, fn: Any, prompt: str) -> np.ndarray:
        items = [prompt + t for t in check_texts(texts, batch_size)]
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            parts.append(as_embeddings(fn(chunk), len(chunk), self.dim, self.spec))
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
            "versions": package_versions(["numpy", *dists]),
        }
        own = getattr(self.obj, "describe", None)
        if callable(own):
            info["plugin"] = own()
        return info


def _build(spec: str, standard: Mapping[str, Any], options: Mapping[str, Any] | None) -> tuple[Any, set[str]]:
    """Call the plug-in's callable with ``options`` plus the ``standard`` arguments that are set and that it
    accepts; return the object it built and the names of the standard arguments it received."""
    factory = plugin_factory(spec)
    kwargs = dict(options or {})
    accepts = _accepted_kwargs(factory)
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
        attr_path = spec.split(":", 1)[1]
        raise EncoderError(f"plug-in '{spec}': calling {attr_path}(**{sorted(kwargs)}) failed: {e}") from e
    return obj, passed


def _encode_methods(spec: str, obj: Any) -> tuple[Any, Any]:
    """(queries, documents) encode methods of a plug-in object: its two sides, or its one ``encode`` for both."""
    if callable(getattr(obj, "encode_queries", None)) and callable(getattr(obj, "encode_documents", None)):
        return obj.encode_queries, obj.encode_documents
    if callable(getattr(obj, "encode", None)):
        return obj.encode, obj.encode
    raise EncoderError(
        f"plug-in '{spec}' returned a {type(obj).__name__}, which has neither "
        f"encode_queries/encode_documents nor encode"
    )


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

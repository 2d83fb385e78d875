"""What every encoder is and gives: the `Encoder` protocol, the checks on its input texts and its output, and
its description for the store manifest (:func:`encoder_info`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from datamodules.errors import EncoderError
from datamodules.offline_models import package_version

# Probe text used to infer a plug-in's output dimension when it does not declare one.
PROBE = "dimension probe"


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
            "versions": package_versions(["numpy"]),
        }
    return _jsonable(info)


def check_texts(texts: Sequence[str], batch_size: int) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise EncoderError("texts must be a sequence of strings, not a single string")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EncoderError(f"batch_size must be a positive integer, got {batch_size!r}")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise EncoderError(f"texts[{i}] is a {type(t).__name__}, not a string")
    return items


def as_embeddings(out: Any, n: int, dim: int | None, spec: str) -> np.ndarray:
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


def package_versions(dists: Sequence[str]) -> dict[str, str | None]:
    """``{distribution: installed version or None}``, for the manifest's ``versions``."""
    return {dist: package_version(dist) for dist in dists}


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

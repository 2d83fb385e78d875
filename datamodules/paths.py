"""Paths built from names found in data (model keys, text sets, splits, shard files) stay inside their folder.

A name that comes from a model spec, a qrels file name or a manifest becomes a path component of a store. One
that is empty, ``.`` or ``..``, or holds a separator or NUL, would name another folder (``<store>/..`` is the
store's parent), so it is refused here, before anything is written, and every path is checked again after
resolving symbolic links.

Standard library only: :mod:`datamodules.datasets` uses it at CLI start-up.
"""

from __future__ import annotations

import os
from pathlib import Path

from datamodules.errors import InputError

__all__ = ["check_name", "name_problem", "safe_child"]

_SEPARATORS = tuple(sep for sep in ("/", "\\", os.sep, os.altsep) if sep)


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be one path component inside a folder, or None when it can."""
    if not isinstance(name, str):
        return f"not a string ({type(name).__name__})"
    if not name:
        return "empty"
    if name in (".", ".."):
        return f"{name!r} names a folder outside"
    if "\0" in name:
        return "contains a NUL character"
    if any(sep in name for sep in _SEPARATORS):
        return "contains a path separator"
    return None


def check_name(name: object, what: str, error: type[InputError] = InputError) -> str:
    """``name`` if it can be one path component; else ``error`` naming ``what`` (e.g. "split name 'x'")."""
    problem = name_problem(name)
    if problem is not None:
        raise error(f"{what} {name!r} cannot be a folder or file name: {problem}")
    return name  # type: ignore[return-value]


def safe_child(
    root: str | Path, *parts: str, what: str = "name", error: type[InputError] = InputError
) -> Path:
    """``root / parts[0] / parts[1] ...``, refused unless every part is a plain name and the resolved path
    (symbolic links followed) lies inside the resolved ``root``.

    ``what`` describes the parts in the error message (e.g. ``"model key"``); ``error`` is the
    :class:`InputError` subclass to raise (``StoreError`` for a store, ``DatasetError`` for a dataset).
    """
    root = Path(root)
    for part in parts:
        check_name(part, what, error)
    path = root.joinpath(*parts)
    base = os.path.realpath(root)
    resolved = os.path.realpath(path)
    if os.path.commonpath([base, resolved]) != base:
        raise error(f"{path}: resolves to {resolved}, outside {root}; refusing to use it")
    return path

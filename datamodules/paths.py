"""Where we read and write: names kept inside their folder, output folders checked before any work.

A name that comes from a model spec, a qrels file name, a manifest or a config (a writer name) becomes a path
component. One that is empty, ``.`` or ``..``, or holds a separator or NUL, would name another folder
(``<store>/..`` is the store's parent), so it is refused before anything is written (:func:`check_name`), and
every path is checked again after resolving symbolic links (:func:`safe_child`, :func:`child_path`). An output
folder is checked before the work that fills it starts (:func:`check_output_dir`).

Each function raises ``error`` (default :class:`InputError`; the data side passes ``StoreError`` or
``DatasetError``, the methods side ``smec.errors.ConfigError``). Both sides use this one module: ``datamodules``
never imports ``smec``.

Standard library only: :mod:`datamodules.datasets` uses it at CLI start-up.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from datamodules.errors import InputError

__all__ = ["check_name", "check_output_dir", "child_path", "name_problem", "safe_child"]

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


def child_path(
    folder: str | os.PathLike[str], name: str, option: str, error: type[InputError] = InputError
) -> Path:
    """``folder / name`` for a ``name`` that is one plain entry of ``folder`` (see :func:`name_problem`; a blank
    name is refused too), else ``error`` naming ``option``.

    A name from a config or a file (a writer name, a model key) decides what is written or deleted: it must not
    lead anywhere but directly inside ``folder``, also not through a symlink.
    """
    if name_problem(name) is not None or not name.strip():
        raise error(f"{option}: {name!r} is not a plain name (expected one folder name, no '/' or '..')")
    folder = Path(folder)
    target = folder / name
    if target.is_symlink() or target.resolve().parent != folder.resolve():
        raise error(f"{option}: {target} leads outside {folder}")
    return target


def check_output_dir(path: str | os.PathLike[str], option: str, error: type[InputError] = InputError) -> Path:
    """Fail now, not after the work, if ``path`` cannot become a folder we write into (``error`` naming
    ``option``).

    ``path`` must be a folder or not exist yet; its nearest existing parent must be a folder we may create
    entries in (tried: an empty probe folder is made and removed there). Nothing else is created. Returns
    ``path`` as a Path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{option}: {path} exists and is not a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise error(f"{option}: cannot create {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK) or not _can_create_in(probe):
        what = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise error(f"{option}: {path} {what}")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether an entry can really be made in ``folder``: ``os.access`` says yes to root everywhere, also on a
    read-only mount or in /proc. The probe folder is removed at once."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".smec-probe-", dir=folder))
    except OSError:
        return False
    return True

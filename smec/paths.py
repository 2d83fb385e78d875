"""Where smec writes: output folders checked before any work, and paths built from names kept inside them."""

from __future__ import annotations

import os
from pathlib import Path

from smec.errors import ConfigError


def check_output_dir(path: str | os.PathLike[str], option: str) -> Path:
    """Fail now, not after the work, if ``path`` cannot become a folder we write into.

    ``path`` must be a folder or not exist yet; its nearest existing parent must be a folder we may create
    entries in. Nothing is created. Returns ``path`` as a Path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}: {path} exists and is not a folder")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option}: cannot create {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise ConfigError(f"{option}: {path} {what}")
    return path


def child_path(folder: str | os.PathLike[str], name: str, option: str) -> Path:
    """``folder / name`` for a ``name`` that is one plain entry of ``folder`` (no separator, not ``.``/``..``).

    A name from a config or a file (a writer name, a model key) decides what is written or deleted: it must not
    lead anywhere but directly inside ``folder``, also not through a symlink.
    """
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        raise ConfigError(
            f"{option}: {name!r} is not a plain name (expected one folder name, no '/' or '..')"
        )
    folder = Path(folder)
    target = folder / name
    if target.is_symlink() or target.resolve().parent != folder.resolve():
        raise ConfigError(f"{option}: {target} leads outside {folder}")
    return target

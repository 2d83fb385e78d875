"""Files written whole or not at all (readers see either the old file or the complete new one), and .npy bytes
that are the same for the same array."""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one.

    An OS error while writing (a full disk, say, which names no file) is raised naming ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if e.filename is None or e.filename == tmp or str(e.filename).endswith(".tmp"):
            raise OSError(e.errno, e.strerror or os.strerror(e.errno or errno.EIO), str(path)) from e
        raise
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` serialised as a .npy file, in memory: the header is a pure function of shape and dtype, so the
    bytes are reproducible (the same array always writes the same file)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()

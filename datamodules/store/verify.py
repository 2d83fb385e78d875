"""Proving a shard holds the writer's bytes: sha256 against the manifest, and no NaN/Inf, in one pass.

With verification on (the default), each shard is checked when it is first opened in a process (once per shard
and process, remembered here); with it off (``SMEC_VERIFY_STORE=0``, ``verify=False``) every read is scanned for
NaN/Inf instead (:class:`FiniteScanner`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import InputError

VERIFY_ENV = "SMEC_VERIFY_STORE"


_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def resolve_verify(verify: bool | None) -> bool:
    """``verify`` itself, or (None) the ``SMEC_VERIFY_STORE`` environment variable: on unless it is 0/false/no/off."""
    if verify is not None:
        return bool(verify)
    value = os.environ.get(VERIFY_ENV, "").strip().lower()
    if value in ("", *_ON):
        return True
    if value in _OFF:
        return False
    raise InputError(f"{VERIFY_ENV}={value!r}: expected one of {', '.join(_ON + _OFF)}")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# Non-finite values by their bit pattern: all exponent bits set (Inf or NaN, either sign). One integer AND and
# one max per value, several times faster than np.isfinite on float16.
_BITS = {
    np.dtype("float16"): (np.uint16, 0x7FFF, 0x7C00),
    np.dtype("float32"): (np.uint32, 0x7FFFFFFF, 0x7F800000),
}


_SCAN_CHUNK = 1 << 18  # values scanned at a time: the scratch buffer stays in cache


class FiniteScanner:
    """Finds the first non-finite value of float16/float32 data (reuses one small scratch buffer)."""

    def __init__(self, dtype: np.dtype) -> None:
        self.utype, self.mask, self.limit = _BITS[np.dtype(dtype)]
        self.scratch = np.empty(_SCAN_CHUNK, dtype=self.utype)

    def first_bad(self, values: np.ndarray) -> int | None:
        """Index of the first Inf/NaN in ``values`` (flattened; any shape, C-contiguous), or None."""
        flat = values.reshape(-1).view(self.utype)
        for lo in range(0, flat.size, _SCAN_CHUNK):
            part = flat[lo : lo + _SCAN_CHUNK]
            out = self.scratch[: part.size]
            np.bitwise_and(part, self.mask, out=out)
            if out.max() >= self.limit:
                return lo + int(np.argmax(out >= self.limit))
        return None


def hash_and_scan(
    path: Path, data_offset: int, dtype: np.dtype, chunk: int = 1 << 22
) -> tuple[str, int | None]:
    """One pass over a shard file: its sha256, and the byte offset of its first non-finite value (or None).

    ``data_offset`` is where the values start (after the .npy header).
    """
    dtype = np.dtype(dtype)
    scanner = FiniteScanner(dtype)
    item = dtype.itemsize
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    pos, bad = 0, None
    with open(path, "rb", buffering=0) as f:
        while True:
            n = 0
            while n < chunk and (got := f.readinto(view[n:])):  # full chunks keep values aligned
                n += got
            if not n:
                break
            h.update(view[:n])
            lo = max(0, data_offset - pos)
            count = (n - lo) // item
            if bad is None and count > 0:
                first = scanner.first_bad(np.frombuffer(buf, dtype=scanner.utype, count=count, offset=lo))
                if first is not None:
                    bad = pos + lo + first * item
            pos += n
            if n < chunk:
                break
    return h.hexdigest(), bad


# Shards verified in this process: path -> (sha256, device, inode, size, mtime). A shard is hashed again only
# if its file changed (or another manifest names another hash for it).
_VERIFIED: dict[str, tuple[Any, ...]] = {}


def file_state(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def remember_verified(path: Path, sha256: str, state: tuple[int, int, int, int] | None = None) -> None:
    """Record that ``path`` (in ``state``, default: as it is now) was proven to hash to ``sha256``."""
    _VERIFIED[os.path.abspath(path)] = (sha256, *(file_state(path) if state is None else state))


def was_verified(path: Path, sha256: str) -> bool:
    """True when this process proved ``path`` to hash to ``sha256`` and the file has not changed since."""
    return _VERIFIED.get(os.path.abspath(path)) == (sha256, *file_state(path))


def redo_hint(folder: Path, manifest: Mapping[str, Any]) -> str:
    model = manifest.get("model") if isinstance(manifest.get("model"), Mapping) else {}
    command = "`smec predict`" if model.get("kind") == "compressed" else "`smec embed`"
    return f"delete {folder} and re-run {command} to write it again"

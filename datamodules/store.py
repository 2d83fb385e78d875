"""The on-disk embedding store: frozen embeddings computed once, read many times.

Layout of a store folder::

    store.json                          format version, dataset name + fingerprint, models, text sets
    ids/<text set>.json                 row ids, shared by every model ("corpus", "queries/test", ...)
    qrels/<split>.json                  relevance judgements copied from the dataset
    <model key>/<text set>/manifest.json  model spec, dim, dtype, rows, per-shard sha256, format version
    <model key>/<text set>/shard-00000.npy  row-major .npy shards (float16 by default), memory-mappable

Writing is resumable: every shard is written to a temporary name, flushed and atomically renamed, so a
``kill -9`` at any moment leaves only complete shards; the manifest is written last. Rerunning the same job
skips finished shards and produces files byte-identical to an uninterrupted run (encoders are deterministic for
a given chunk, and chunk boundaries are fixed by ``shard_rows``). A text set without a manifest is incomplete
and is never opened for reading.

Reading is read-only: :class:`EmbeddingStore` validates manifests against the shard files (shape, dtype,
size) and yields either one model's rows or the concatenation of several models — each L2-normalised,
concatenated and renormalised (Ben Ayad et al.'s recipe), see :func:`combine`.

A corrupt or non-finite store never reaches a number. With verification on (the default), each shard's sha256
is compared with the manifest, and its values checked for NaN/Inf, when the shard is first opened in a process
(once per shard and process; 0.4-0.8 GiB/s on one core, see README); a shard that fails names
itself and says how to re-make it. For very large stores verification can be turned off
(``EmbeddingStore(..., verify=False)``, ``data.init_args.verify: false``, ``smec eval --no-verify``, or
``SMEC_VERIFY_STORE=0`` for every command); the rows are then checked for NaN/Inf as they are read, which costs
one pass over each batch instead of one hash of the whole store.

Every path built from a name that comes from data (model key, text set, split, shard file) goes through
:func:`datamodules.paths.safe_child`, so no name can lead outside the store folder.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import InputError, StoreError
from datamodules.paths import check_name, name_problem, safe_child

FORMAT_VERSION = 1
STORE_FILE = "store.json"
MANIFEST_FILE = "manifest.json"
DTYPES = ("float16", "float32")
NORMALIZATIONS = ("l2-concat-l2", "l2-concat", "none")
DEFAULT_SHARD_ROWS = 8192
VERIFY_ENV = "SMEC_VERIFY_STORE"
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def model_key(spec: str) -> str:
    """A folder-safe key for a model spec (``sentence-transformers/all-MiniLM-L6-v2`` -> ``sentence-transformers__all-MiniLM-L6-v2``).

    An absolute path gives its last component. A spec whose key would not be a plain folder name (``..``,
    ``/models/x/..``, ``.``, empty) is refused: its shards would land outside the store.
    """
    if not isinstance(spec, str):
        raise StoreError(f"model spec must be a string, got {spec!r}")
    key = spec.strip().rstrip("/").replace("\\", "/")
    if os.path.isabs(key):
        key = Path(key).name
    key = key.replace("/", "__").replace(":", "--")
    problem = name_problem(key)
    if problem is not None:
        raise StoreError(
            f"model spec {spec!r}: its store folder name would be {key!r} ({problem}); "
            "name the model by a spec that ends in the model's own name"
        )
    return key


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


def _text_set_parts(text_set: str) -> list[str]:
    """The folder names of a text set (``queries/test`` -> ``queries``, ``test``), each a plain name."""
    if not isinstance(text_set, str):
        raise StoreError(f"text set must be a string, got {text_set!r}")
    parts = text_set.split("/")
    for part in parts:
        check_name(part, f"text set {text_set!r}: part", StoreError)
    return parts


def _data_folder(root: Path, key: str, text_set: str) -> Path:
    """``<store>/<model key>/<text set>``, inside the store."""
    check_name(key, "model key", StoreError)
    return safe_child(root, key, *_text_set_parts(text_set), what="name", error=StoreError)


def _ids_path(root: Path, text_set: str) -> Path:
    """``<store>/ids/<text set>.json``, inside the store."""
    *folders, last = _text_set_parts(text_set)
    return safe_child(root, "ids", *folders, f"{last}.json", what="name", error=StoreError)


def _qrels_path(root: Path, split: str) -> Path:
    """``<store>/qrels/<split>.json``, inside the store."""
    check_name(split, "split name", StoreError)
    return safe_child(root, "qrels", f"{split}.json", what="name", error=StoreError)


# ---------------------------------------------------------------------------------------------------------
# small file helpers


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


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: missing {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: {what} is not valid JSON ({e})") from None


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


class _FiniteScanner:
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
    scanner = _FiniteScanner(dtype)
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


def _file_state(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _remember_verified(path: Path, sha256: str) -> None:
    _VERIFIED[os.path.abspath(path)] = (sha256, *_file_state(path))


def _redo_hint(folder: Path, manifest: Mapping[str, Any]) -> str:
    model = manifest.get("model") if isinstance(manifest.get("model"), Mapping) else {}
    command = "`smec predict`" if model.get("kind") == "compressed" else "`smec embed`"
    return f"delete {folder} and re-run {command} to write it again"


def _npy_bytes(array: np.ndarray) -> bytes:
    """Serialise to .npy in memory: the header is a pure function of shape and dtype, so bytes are reproducible."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _check_format_version(obj: Any, path: Path) -> None:
    if not isinstance(obj, Mapping):
        raise StoreError(
            f"{path}: a JSON {type(obj).__name__}, not an object; expected a file written by smec"
        )
    version = obj.get("format_version")
    if not isinstance(version, int):
        raise StoreError(f"{path}: no integer 'format_version'; expected a store written by smec")
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{path}: written by a newer smec (store format {version}); this version reads format "
            f"<= {FORMAT_VERSION}. Upgrade smec or re-embed."
        )


def _is_count(value: Any, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_meta(meta: Any, path: Path) -> None:
    """store.json: the fields readers rely on, with their types; names that become paths are plain names."""
    _check_format_version(meta, path)
    dataset = meta.get("dataset")
    if not isinstance(dataset, Mapping) or not isinstance(dataset.get("name"), str):
        raise StoreError(f"{path}: no 'dataset' with a 'name'; expected a store written by `smec embed`")
    for field in ("text_sets", "splits"):
        value = meta.get(field)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise StoreError(f"{path}: '{field}' must be a list of names")
    for text_set in meta["text_sets"]:
        _text_set_parts(text_set)
    for split in meta["splits"]:
        check_name(split, f"{path}: split name", StoreError)
    models = meta.get("models")
    if not isinstance(models, Mapping):
        raise StoreError(f"{path}: 'models' must be an object (model key -> dim, model)")
    for key, entry in models.items():
        check_name(key, f"{path}: model key", StoreError)
        if not isinstance(entry, Mapping) or not _is_count(entry.get("dim"), 1):
            raise StoreError(f"{path}: model {key!r} has no positive integer 'dim'")
    order = meta.get("model_order", [])
    if not isinstance(order, list) or not all(isinstance(k, str) for k in order):
        raise StoreError(f"{path}: 'model_order' must be a list of model keys")


def _check_manifest(manifest: Any, path: Path, key: str, text_set: str) -> None:
    """manifest.json: dim, dtype, rows and shards well-formed, and written for this (model, text set)."""
    _check_format_version(manifest, path)
    if not _is_count(manifest.get("dim"), 1):
        raise StoreError(f"{path}: 'dim' must be a positive integer, got {manifest.get('dim')!r}")
    if manifest.get("dtype") not in DTYPES:
        raise StoreError(f"{path}: 'dtype' {manifest.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    if not _is_count(manifest.get("rows")):
        raise StoreError(f"{path}: 'rows' must be a non-negative integer, got {manifest.get('rows')!r}")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise StoreError(f"{path}: 'shards' must be a non-empty list")
    for i, shard in enumerate(shards):
        if not isinstance(shard, Mapping) or not _is_count(shard.get("rows")):
            raise StoreError(f"{path}: shard {i} needs a 'file' and a non-negative integer 'rows'")
        check_name(shard.get("file"), f"{path}: shard file", StoreError)
        digest = shard.get("sha256")
        if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise StoreError(f"{path}: shard {i} has a malformed 'sha256' {digest!r}")
    # A manifest copied from another folder would pass every size check; the writer records where it belongs.
    for field, expected in (("model_key", key), ("text_set", text_set)):
        if field in manifest and manifest[field] != expected:
            raise StoreError(
                f"{path}: written for {field.replace('_', ' ')} {manifest[field]!r}, but it is in the folder of "
                f"{expected!r}; the store was edited by hand: re-make it with `smec embed`"
            )


def _has_visible_entries(folder: Path) -> bool:
    return any(not entry.name.startswith(".") for entry in folder.iterdir())


# ---------------------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class TextSetSpec:
    """What a writer needs to know about one text set: its name and row ids."""

    name: str
    ids: Sequence[str]


class StoreWriter:
    """Creates or resumes a store for one dataset.

    The constructor only validates (names, an existing store's format, dataset fingerprint, ids and qrels):
    nothing is written until the first :meth:`write` or :meth:`record_model_order`, so a job that fails before
    its first model loads leaves no skeleton store behind. ``store.json`` is then written first, so a folder
    holding a store's files always says it is one.

    Args:
        path: store folder (created if missing; an existing folder must be a store or hold no visible files).
        dataset: dataset name recorded in ``store.json``.
        fingerprint: dataset fingerprint; resuming into a store built from other data is refused.
        text_sets: every text set with its ids (e.g. ``corpus``, ``queries/test``).
        qrels: split -> qid -> docid -> relevance, copied into the store so evaluation needs nothing else.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dataset: str,
        fingerprint: str,
        text_sets: Sequence[TextSetSpec],
        qrels: Mapping[str, Mapping[str, Mapping[str, int]]],
    ) -> None:
        self.path = Path(path)
        self.text_sets = {ts.name: list(ts.ids) for ts in text_sets}
        files = [(_ids_path(self.path, name), ids, f"ids of {name}") for name, ids in self.text_sets.items()]
        for split, q in qrels.items():
            plain = {qid: {d: int(r) for d, r in docs.items()} for qid, docs in q.items()}
            files.append((_qrels_path(self.path, split), plain, f"qrels of {split}"))
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: exists and is not a folder; expected a store folder")
        meta_path = self.path / STORE_FILE
        if meta_path.exists():
            meta = _read_json(meta_path, "store manifest")
            _check_meta(meta, meta_path)
            if meta.get("dataset", {}).get("fingerprint") != fingerprint:
                raise StoreError(
                    f"{meta_path}: this store was built from dataset {meta.get('dataset', {}).get('name')!r} "
                    f"with different contents (fingerprint mismatch); use another --out folder"
                )
            self.meta = meta
            # A rerun may embed more splits of the same data: the reader must know their text sets.
            for field, names in (("text_sets", self.text_sets), ("splits", qrels)):
                meta[field] = sorted(set(meta[field]) | set(names))
        else:
            if self.path.is_dir() and _has_visible_entries(self.path):
                raise StoreError(
                    f"{self.path}: folder holds files but no {STORE_FILE}, so it is not a store; "
                    "give an empty or new folder"
                )
            self.meta = {
                "format_version": FORMAT_VERSION,
                "dataset": {"name": dataset, "fingerprint": fingerprint},
                "text_sets": sorted(self.text_sets),
                "splits": sorted(qrels),
                "models": {},
            }
        self._pending: list[tuple[Path, Any]] = []
        for file, obj, what in files:
            if file.exists():
                if _read_json(file, what) != obj:
                    raise StoreError(
                        f"{file}: {what} differ from the dataset being embedded; use another --out"
                    )
            else:
                self._pending.append((file, obj))
        self._written = False

    def _write_skeleton(self) -> None:
        """store.json, then any missing ids/qrels files (once, before the first shard)."""
        if self._written:
            return
        atomic_write_json(self.path / STORE_FILE, self.meta)
        for file, obj in self._pending:
            atomic_write_json(file, obj)
        self._pending.clear()
        self._written = True

    def is_complete(self, key: str, text_set: str) -> bool:
        return (_data_folder(self.path, key, text_set) / MANIFEST_FILE).exists()

    def record_model_order(self, keys: Sequence[str]) -> None:
        """Remember the order models were asked for: it is the default concatenation order when reading."""
        for key in keys:
            check_name(key, "model key", StoreError)
        new = self._extend_model_order(keys)
        if new or not self._written:
            self._written = False  # store.json is (re)written with the new order
            self._write_skeleton()

    def _extend_model_order(self, keys: Sequence[str]) -> bool:
        order = self.meta.setdefault("model_order", [])
        new = [k for k in keys if k not in order]
        order += new
        return bool(new)

    def remove_model(self, key: str) -> None:
        """Delete one model's folder (every text set) from the store, and its entry in ``store.json``.

        Only ``<store>/<key>`` can be deleted: ``key`` must be a plain name that resolves inside the store.
        """
        folder = safe_child(self.path, key, what="model key", error=StoreError)
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)
        self.meta["models"].pop(key, None)
        if key in self.meta.get("model_order", []):
            self.meta["model_order"].remove(key)
        self._written = False
        self._write_skeleton()

    def write(
        self,
        key: str,
        text_set: str,
        *,
        dim: int,
        encode: Callable[[int, int], np.ndarray],
        model_info: Mapping[str, Any],
        dtype: str = "float16",
        shard_rows: int = DEFAULT_SHARD_ROWS,
        on_rows: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Write one (model, text set), resuming after the last complete shard.

        Args:
            encode: ``encode(start, stop)`` returns rows ``start:stop`` as a float array of shape
                ``(stop - start, dim)``; called once per missing shard, so only missing work is done. Rows with
                NaN/Inf are refused (nothing is written for that shard).
            on_rows: progress callback, called with the number of rows just written (or skipped).
        Returns:
            The manifest of the finished text set.
        """
        if dtype not in DTYPES:
            raise StoreError(f"dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
        if text_set not in self.text_sets:
            raise StoreError(f"unknown text set {text_set!r}; this store has {sorted(self.text_sets)}")
        if not _is_count(shard_rows, 1):
            raise StoreError(f"shard_rows must be a positive integer, got {shard_rows!r}")
        if not _is_count(dim, 1):
            raise StoreError(f"model {key!r}: dim must be a positive integer, got {dim!r}")
        folder = _data_folder(self.path, key, text_set)
        manifest_path = folder / MANIFEST_FILE
        if manifest_path.exists():
            manifest = _read_json(manifest_path, "manifest")
            _check_manifest(manifest, manifest_path, key, text_set)
            if on_rows:
                on_rows(manifest["rows"])
            return manifest
        self._write_skeleton()
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by a killed run; never looks complete
            stale.unlink()
        ids = self.text_sets[text_set]
        n = len(ids)
        n_shards = max(1, -(-n // shard_rows))
        shards = []
        for i in range(n_shards):
            start, stop = i * shard_rows, min(n, (i + 1) * shard_rows)
            shard_path = folder / f"shard-{i:05d}.npy"
            if shard_path.exists() and _shard_ok(shard_path, stop - start, dim, dtype):
                if on_rows:
                    on_rows(stop - start)
            else:
                rows = np.asarray(encode(start, stop))
                _check_rows(rows, stop - start, dim, ids[start:stop], key, text_set, dtype)
                atomic_write_bytes(shard_path, _npy_bytes(rows.astype(dtype)))
                if on_rows:
                    on_rows(stop - start)
            shards.append({"file": shard_path.name, "rows": stop - start})
        for s in shards:
            # Shards kept from a killed run were finite when written; one pass proves it still holds.
            path = folder / s["file"]
            header = int(np.load(path, mmap_mode="r").offset)
            s["sha256"], bad = hash_and_scan(path, header, np.dtype(dtype))
            if bad is not None:
                raise StoreError(
                    f"{path}: row {(bad - header) // (dim * np.dtype(dtype).itemsize)} holds NaN or Inf "
                    "(the file was changed after it was written); delete it and run the command again"
                )
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_key": key,
            "model": dict(model_info),
            "text_set": text_set,
            "dim": int(dim),
            "dtype": dtype,
            "rows": n,
            "shard_rows": shard_rows,
            "shards": shards,
        }
        atomic_write_json(manifest_path, manifest)
        for s in shards:  # hashed and scanned just now: readers in this process need not do it again
            _remember_verified(folder / s["file"], s["sha256"])
        self.meta["models"][key] = {"dim": int(dim), "model": dict(model_info)}
        self._extend_model_order([key])
        atomic_write_json(self.path / STORE_FILE, self.meta)
        return manifest


def _shard_ok(path: Path, rows: int, dim: int, dtype: str) -> bool:
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return False
    return arr.shape == (rows, dim) and arr.dtype == np.dtype(dtype)


def _check_rows(
    rows: np.ndarray, n: int, dim: int, ids: Sequence[str], key: str, text_set: str, dtype: str
) -> None:
    if rows.ndim != 2 or rows.shape != (n, dim):
        raise StoreError(
            f"model {key!r} returned an array of shape {tuple(rows.shape)} for {text_set}; expected ({n}, {dim})"
        )
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        bad_ids = [ids[i] for i in np.flatnonzero(bad)[:5]]
        raise StoreError(
            f"model {key!r} returned NaN/Inf for {int(bad.sum())} row(s) of {text_set} (ids {bad_ids}); "
            "nothing was written for this shard"
        )
    if dtype == "float16" and np.abs(rows).max(initial=0.0) > np.finfo(np.float16).max:
        raise StoreError(f"model {key!r}: values overflow float16 in {text_set}; use --dtype float32")


# ---------------------------------------------------------------------------------------------------------
# reading


class ShardedArray:
    """One model's rows of one text set, backed by memory-mapped shards (nothing is read until asked).

    ``read(start, stop)`` copies a contiguous range, ``take(indices)`` gathers arbitrary rows; both return
    arrays in the stored dtype. ``read_into`` / ``read_runs`` fill a caller's buffers with plain file reads
    (nothing mapped, see :class:`RunReader`) so that streaming a large store does not grow the resident set.
    Pickles by reference (folder + manifest), so DataLoader workers started with ``spawn`` reopen the shards
    instead of receiving their data.

    ``verify``: compare each shard's sha256 with the manifest and scan it for NaN/Inf when it is opened (once
    per shard and process; a copy pickled to a DataLoader worker trusts its parent's check). Without it, every
    read scans the rows it returns for NaN/Inf instead. Either way a shard that fails raises
    :class:`StoreError` naming the file, before its rows reach a caller.
    """

    def __init__(self, folder: Path, manifest: Mapping[str, Any], verify: bool = True) -> None:
        self.folder = folder
        self.manifest = manifest
        manifest_path = folder / MANIFEST_FILE
        self.dim = int(manifest["dim"])
        self.dtype = np.dtype(manifest["dtype"])
        self.rows = int(manifest["rows"])
        self._files = [
            safe_child(folder, s["file"], what="shard file", error=StoreError) for s in manifest["shards"]
        ]
        counts = [int(s["rows"]) for s in manifest["shards"]]
        if sum(counts) != self.rows:
            raise StoreError(f"{manifest_path}: shard rows add up to {sum(counts)}, expected {self.rows}")
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._maps: list[np.ndarray] = []
        self._data_offsets: list[int] = []
        for path, count in zip(self._files, counts):
            self._maps.append(self._open_shard(path, count))
        if verify:
            for i in range(len(self._files)):
                self._verify_shard(i, force=False)
        # True when every shard's bytes were proven to be the writer's (hence finite): reads skip the NaN scan.
        self.verified = bool(verify)

    @property
    def redo(self) -> str:
        """What to do about a bad shard of this array (one sentence)."""
        return _redo_hint(self.folder, self.manifest)

    def _open_shard(self, path: Path, count: int) -> np.ndarray:
        expected = (count, self.dim)
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise StoreError(f"{path}: shard listed in the manifest is missing; {self.redo}") from None
        except ValueError as e:
            # np.load refuses a file shorter than its header says: a truncated shard.
            raise StoreError(f"{path}: unreadable or truncated shard ({e}); {self.redo}") from None
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise StoreError(f"{path}: shard has dim {arr.shape[-1]}, but the manifest says dim {self.dim}")
        if arr.shape != expected:
            raise StoreError(f"{path}: shard has shape {arr.shape}, expected {expected} from the manifest")
        if arr.dtype != self.dtype:
            raise StoreError(f"{path}: shard dtype {arr.dtype}, but the manifest says {self.dtype}")
        self._data_offsets.append(int(arr.offset))
        expected_bytes = arr.offset + count * self.dim * self.dtype.itemsize
        if path.stat().st_size != expected_bytes:
            raise StoreError(
                f"{path}: {path.stat().st_size} bytes, expected {expected_bytes}; truncated shard; {self.redo}"
            )
        return arr

    def _verify_shard(self, i: int, force: bool) -> None:
        """Shard ``i``: sha256 as in the manifest and no NaN/Inf (skipped if done in this process, unless forced)."""
        path = self._files[i]
        expected = self.manifest["shards"][i].get("sha256")
        if not expected:
            raise StoreError(
                f"{self.folder / MANIFEST_FILE}: no sha256 for {path.name}, so it cannot be verified; "
                f"{self.redo} (or open the store with verification off)"
            )
        if not force and _VERIFIED.get(os.path.abspath(path)) == (expected, *_file_state(path)):
            return
        state = _file_state(path)
        digest, bad = hash_and_scan(path, self._data_offsets[i], self.dtype)
        if digest != expected:
            raise StoreError(f"{path}: sha256 differs from the manifest; the shard is corrupt: {self.redo}")
        if bad is not None:
            row = (bad - self._data_offsets[i]) // (self.dim * self.dtype.itemsize)
            raise StoreError(f"{path}: row {row} holds NaN or Inf: {self.redo}")
        _VERIFIED[os.path.abspath(path)] = (expected, *state)

    def _check_finite(self, out: np.ndarray, rows: np.ndarray | None = None, start: int = 0) -> None:
        """Raise naming the shard if ``out`` (rows ``rows`` of the array, or ``start:start+len(out)``) holds NaN/Inf."""
        if self.verified or out.size == 0:
            return
        bad = _FiniteScanner(self.dtype).first_bad(np.ascontiguousarray(out))
        if bad is not None:
            self._raise_nonfinite(int(rows[bad // self.dim]) if rows is not None else start + bad // self.dim)

    def _raise_nonfinite(self, row: int) -> None:
        s = int(np.searchsorted(self._offsets, row, side="right") - 1)
        raise StoreError(
            f"{self._files[s]}: row {row - int(self._offsets[s])} holds NaN or Inf "
            f"(read with verification off): {self.redo}"
        )

    def __reduce__(self) -> tuple[Any, tuple[Path, Mapping[str, Any], bool]]:
        # By reference: a memory map would pickle as its whole data. The copy trusts this process's check.
        return (_reopen, (self.folder, self.manifest, self.verified))

    def __len__(self) -> int:
        return self.rows

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.dim)

    def _locate(self, start: int, stop: int):
        """Yield (shard index, local start, local stop, output offset) covering rows start:stop."""
        s = int(np.searchsorted(self._offsets, start, side="right") - 1)
        pos = start
        while pos < stop:
            lo = pos - self._offsets[s]
            hi = min(stop, self._offsets[s + 1]) - self._offsets[s]
            yield s, int(lo), int(hi), pos - start
            pos += hi - lo
            s += 1

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.rows if stop is None else min(stop, self.rows)
        return self.read_into(np.empty((max(0, stop - start), self.dim), dtype=self.dtype), start)

    def read_into(self, out: np.ndarray, start: int) -> np.ndarray:
        """Fill ``out`` (C-contiguous, shape (n, dim), stored dtype) with rows start:start+n."""
        self.read_runs([out], [start], [out.shape[0]], [0])
        return out

    def will_need(self, start: int, stop: int) -> None:
        """Ask the kernel to read rows start:stop into the page cache in the background (POSIX_FADV_WILLNEED)."""
        if not hasattr(os, "posix_fadvise"):
            return
        row_bytes = self.dim * self.dtype.itemsize
        for s, lo, hi, _ in self._locate(start, min(stop, self.rows)):
            fd = os.open(self._files[s], os.O_RDONLY)
            try:
                os.posix_fadvise(
                    fd, self._data_offsets[s] + lo * row_bytes, (hi - lo) * row_bytes, os.POSIX_FADV_WILLNEED
                )
            finally:
                os.close(fd)

    def read_runs(
        self,
        outs: Sequence[np.ndarray],
        starts: Sequence[int] | np.ndarray,
        lengths: Sequence[int] | np.ndarray,
        at: Sequence[int] | np.ndarray,
    ) -> None:
        """Copy rows ``starts[i] : starts[i] + lengths[i]`` to rows ``at[i] : at[i] + lengths[i]`` of ``outs``
        (laid end to end as one stream of rows); see :class:`RunReader`."""
        with RunReader(self, starts, lengths, at, [len(o) for o in outs]) as reader:
            for i, out in enumerate(outs):
                reader.read(i, out)

    def take(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), dtype=self.dtype)
        shard_of = np.searchsorted(self._offsets, indices, side="right") - 1
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[sel] = self._maps[s][indices[sel] - self._offsets[s]]
        self._check_finite(out, rows=indices)
        return out

    def verify(self) -> None:
        """Recompute every shard's sha256 and compare with the manifest, and scan for NaN/Inf (reads the whole
        array, even if this process checked it before)."""
        for i in range(len(self._files)):
            self._verify_shard(i, force=True)
        self.verified = True


def _reopen(folder: Path, manifest: Mapping[str, Any], verified: bool) -> ShardedArray:
    array = ShardedArray(folder, manifest, verify=False)
    array.verified = verified
    return array


_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in getattr(os, "sysconf_names", {}) else 1024


class RunReader:
    """Reads runs of consecutive rows of a :class:`ShardedArray` into a sequence of buffers with ``preadv``.

    Run ``i`` copies rows ``starts[i] : starts[i] + lengths[i]`` to rows ``at[i] : at[i] + lengths[i]`` of the
    buffers laid end to end (``sizes`` rows each; a window of batches, say). The plan — runs cut at shard and
    buffer boundaries, file offsets, one system call per stretch that is contiguous in a shard — is computed
    once, vectorised; ``read(b, out)`` then fills buffer ``b`` (C-contiguous, (sizes[b], dim), stored dtype).

    Why plain reads: every byte is copied once, from the page cache straight into its batch, and nothing is
    mapped, so streaming a store of any size leaves the resident set at the size of the batches. A memory map
    costs the same copy plus a page-table entry per 4 KiB page, and its pages count as resident. Reading one
    buffer at a time (rather than a whole window in file order, scattering into every buffer) keeps the
    destination in cache: measured faster here. ``preadv`` releases the GIL, so a reader thread overlaps it
    with the consumer. Shard files are opened on first use and closed by ``close`` / the ``with`` block.
    """

    def __init__(
        self,
        array: ShardedArray,
        starts: Sequence[int] | np.ndarray,
        lengths: Sequence[int] | np.ndarray,
        at: Sequence[int] | np.ndarray,
        sizes: Sequence[int],
    ) -> None:
        starts, lengths, at = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (starts, lengths, at))
        keep = lengths > 0
        starts, lengths, at = starts[keep], lengths[keep], at[keep]
        edges = np.cumsum([0, *sizes]).astype(np.int64)
        if len(starts) and (starts.min() < 0 or (starts + lengths).max() > array.rows):
            raise IndexError(f"RunReader: rows outside 0:{array.rows} of {array.folder}")
        if len(at) and (at.min() < 0 or (at + lengths).max() > edges[-1]):
            raise IndexError(f"RunReader: destinations outside the {edges[-1]} rows of the buffers")
        starts, lengths, at = _cut_runs(starts, lengths, at, array._offsets, edges)
        buf = np.searchsorted(edges, at, side="right") - 1
        order = np.lexsort((starts, buf))  # buffer by buffer, in file order within each
        starts, lengths, at, buf = starts[order], lengths[order], at[order], buf[order]
        shard = np.searchsorted(array._offsets, starts, side="right") - 1
        row_bytes = array.dim * array.dtype.itemsize
        pos = (
            np.asarray(array._data_offsets, dtype=np.int64)[shard]
            + (starts - array._offsets[shard]) * row_bytes
        )
        size = lengths * row_bytes
        # One system call per stretch of runs contiguous in one shard and bound for one buffer, IOV_MAX at most.
        new_call = np.ones(len(starts), dtype=bool)
        new_call[1:] = (shard[1:] != shard[:-1]) | (buf[1:] != buf[:-1]) | (pos[1:] != pos[:-1] + size[:-1])
        first = np.flatnonzero(new_call)
        new_call |= (np.arange(len(starts)) - first[np.cumsum(new_call) - 1]) % _IOV_MAX == 0
        calls = np.append(np.flatnonzero(new_call), len(starts))
        self._call_buf = buf[calls[:-1]]
        self._calls = calls.tolist()
        self._shard, self._pos, self._size = shard.tolist(), pos.tolist(), size.tolist()
        self._begin = ((at - edges[buf]) * row_bytes).tolist()
        self.array, self.sizes = array, list(sizes)
        self._fds: dict[int, int] = {}
        if not array.verified:
            self._plan_scan(starts, lengths, at - edges[buf], buf)

    def read(self, b: int, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (buffer ``b``) with every run bound for it."""
        a = self.array
        if out.dtype != a.dtype or out.shape != (self.sizes[b], a.dim) or not out.flags.c_contiguous:
            raise ValueError(
                f"RunReader.read: expected a C-contiguous ({self.sizes[b]}, {a.dim}) {a.dtype} buffer"
            )
        view = memoryview(out.reshape(-1).view(np.uint8))
        lo, hi = np.searchsorted(self._call_buf, [b, b + 1]).tolist()
        calls, begin, size, fds = self._calls, self._begin, self._size, self._fds
        for c in range(lo, hi):
            first, last = calls[c], calls[c + 1]
            s = self._shard[first]
            fd = fds.get(s)
            if fd is None:
                fd = fds[s] = os.open(a._files[s], os.O_RDONLY)
            iov = [view[begin[i] : begin[i] + size[i]] for i in range(first, last)]
            _preadv_all(fd, iov, self._pos[first], a._files[s])
        if not a.verified:
            self._scan(b, out)
        return out

    def _plan_scan(self, starts: np.ndarray, lengths: np.ndarray, dst: np.ndarray, buf: np.ndarray) -> None:
        """For an unverified array: the row spans each buffer receives (runs merged), to scan for NaN/Inf."""
        order = np.lexsort((dst, buf))
        b, d, n = buf[order], dst[order], lengths[order]
        new_span = np.ones(len(b), dtype=bool)
        new_span[1:] = (b[1:] != b[:-1]) | (d[1:] != d[:-1] + n[:-1])
        first = np.flatnonzero(new_span)
        self._span_buf = b[first]
        self._span_lo = d[first].tolist()
        self._span_hi = (d[first] + (np.add.reduceat(n, first) if len(first) else n[:0])).tolist()
        self._runs = (b, d, n, starts[order])
        self._scanner = _FiniteScanner(self.array.dtype)

    def _scan(self, b: int, out: np.ndarray) -> None:
        lo, hi = np.searchsorted(self._span_buf, [b, b + 1]).tolist()
        for k in range(lo, hi):
            start, stop = self._span_lo[k], self._span_hi[k]
            bad = self._scanner.first_bad(out[start:stop])
            if bad is not None:
                row = start + bad // self.array.dim
                rb, rd, rn, rs = self._runs
                run = int(np.flatnonzero((rb == b) & (rd <= row) & (row < rd + rn))[0])
                self.array._raise_nonfinite(int(rs[run] + row - rd[run]))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cut_runs(
    starts: np.ndarray, lengths: np.ndarray, at: np.ndarray, src_edges: np.ndarray, dst_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut runs where they cross a source edge (shard boundary) or a destination edge (buffer boundary)."""

    def crosses(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges, x, side="right") != np.searchsorted(
            edges, x + lengths - 1, side="right"
        )

    need = crosses(starts, src_edges) | crosses(at, dst_edges)
    if not need.any():
        return starts, lengths, at
    parts = [(starts[~need], lengths[~need], at[~need])]

    def inside(edges: np.ndarray, lo: int, hi: int) -> np.ndarray:
        return edges[np.searchsorted(edges, lo, side="right") : np.searchsorted(edges, hi, side="left")] - lo

    for s, n, a in zip(starts[need].tolist(), lengths[need].tolist(), at[need].tolist()):
        cuts = np.union1d(inside(src_edges, s, s + n), inside(dst_edges, a, a + n))
        offs = np.concatenate([[0], cuts, [n]]).astype(np.int64)
        parts.append((s + offs[:-1], np.diff(offs), a + offs[:-1]))
    return tuple(np.concatenate(v) for v in zip(*parts))  # type: ignore[return-value]


def _preadv_all(fd: int, iov: list[memoryview], pos: int, path: Path) -> None:
    """``preadv`` until every buffer is full (a regular file reads short only at its end)."""
    want = sum(len(v) for v in iov)
    got = os.preadv(fd, iov, pos)
    while got < want:
        if got <= 0:
            raise StoreError(f"{path}: shard ended early; truncated after it was opened")
        pos, want = pos + got, want - got
        while got >= len(iov[0]):
            got -= len(iov.pop(0))
        iov[0] = iov[0][got:]
        got = os.preadv(fd, iov, pos)


def combine(
    blocks: Sequence[np.ndarray],
    normalization: str = "l2-concat-l2",
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Concatenate per-model rows into float32 vectors.

    ``l2-concat-l2`` (default, the paper's recipe): each model's rows are L2-normalised, optionally scaled by a
    per-model weight, concatenated, and the result is L2-normalised again. ``l2-concat`` skips the final
    renormalisation; ``none`` concatenates the raw rows.
    """
    if normalization not in NORMALIZATIONS:
        raise StoreError(
            f"normalization {normalization!r} is unknown; expected one of {', '.join(NORMALIZATIONS)}"
        )
    parts = []
    for i, b in enumerate(blocks):
        b = np.asarray(b, dtype=np.float32)
        if normalization != "none":
            b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        if weights is not None:
            b = b * np.float32(weights[i])
        parts.append(b)
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    if normalization == "l2-concat-l2":
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(out, dtype=np.float32)


class ConcatView:
    """Rows of several models side by side, combined on the fly by :func:`combine`. Nothing is loaded up front."""

    def __init__(
        self,
        arrays: Sequence[ShardedArray],
        normalization: str = "l2-concat-l2",
        weights: Sequence[float] | None = None,
    ) -> None:
        if normalization not in NORMALIZATIONS:
            raise StoreError(
                f"normalization {normalization!r} is unknown; expected one of {', '.join(NORMALIZATIONS)}"
            )
        if weights is not None and len(weights) != len(arrays):
            raise StoreError(f"weights has {len(weights)} entries for {len(arrays)} models")
        self.arrays = list(arrays)
        self.normalization = normalization
        self.weights = None if weights is None else [float(w) for w in weights]
        self.rows = len(self.arrays[0])
        self.dims = [a.dim for a in self.arrays]
        self.dim = sum(self.dims)

    def __len__(self) -> int:
        return self.rows

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return combine([a.read(start, stop) for a in self.arrays], self.normalization, self.weights)

    def take(self, indices: np.ndarray) -> np.ndarray:
        return combine([a.take(indices) for a in self.arrays], self.normalization, self.weights)

    def to_numpy(self) -> np.ndarray:
        return self.read(0, self.rows)


class EmbeddingStore:
    """A finished (or partly finished) store, opened read-only.

    Args:
        path: the store folder (``smec embed --out``).
        verify: check each shard's sha256 against its manifest, and scan it for NaN/Inf, when it is first opened
            in this process (see :class:`ShardedArray`); ``False`` skips the hash (for very large stores) and
            scans every read instead. ``None`` (default): on, unless the environment variable
            ``SMEC_VERIFY_STORE`` is ``0`` / ``false`` / ``no`` / ``off``.
    """

    def __init__(self, path: str | Path, verify: bool | None = None) -> None:
        self.path = Path(path)
        self.verify_shards = resolve_verify(verify)
        meta_path = self.path / STORE_FILE
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(
                f"{self.path}: is a file, not a store folder; give the folder `smec embed` wrote"
            )
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such store folder; create one with `smec embed`")
        if not meta_path.exists():
            raise StoreError(
                f"{meta_path}: missing, so {self.path} is not a store; give the folder `smec embed` wrote"
            )
        self.meta = _read_json(meta_path, "store manifest")
        _check_meta(self.meta, meta_path)
        self._ids: dict[str, list[str]] = {}

    @property
    def dataset(self) -> str:
        return str(self.meta["dataset"]["name"])

    @property
    def text_sets(self) -> list[str]:
        return list(self.meta["text_sets"])

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    @property
    def models(self) -> list[str]:
        """Model keys with at least one finished text set, in the order they were embedded (``--models``)."""
        known = self.meta["models"]
        order = [k for k in self.meta.get("model_order", []) if k in known]
        return order + sorted(k for k in known if k not in order)

    def model_dim(self, key: str) -> int:
        self._check_model(key)
        return int(self.meta["models"][key]["dim"])

    def _check_model(self, key: str) -> None:
        if key not in self.meta["models"]:
            raise StoreError(
                f"{self.path}: model {key!r} is not in this store; it has {self.models or 'no models yet'}"
            )

    def _check_text_set(self, text_set: str) -> None:
        if text_set not in self.meta["text_sets"]:
            raise StoreError(
                f"{self.path}: text set {text_set!r} is not in this store; it has {self.text_sets}"
            )

    def ids(self, text_set: str) -> list[str]:
        self._check_text_set(text_set)
        if text_set not in self._ids:
            path = _ids_path(self.path, text_set)
            ids = _read_json(path, f"ids of {text_set}")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise StoreError(f"{path}: expected a JSON list of id strings")
            self._ids[text_set] = ids
        return self._ids[text_set]

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self.splits:
            raise StoreError(f"{self.path}: split {split!r} is not in this store; it has {self.splits}")
        path = _qrels_path(self.path, split)
        qrels = _read_json(path, f"qrels of {split}")
        if not isinstance(qrels, dict) or not all(isinstance(d, dict) for d in qrels.values()):
            raise StoreError(f"{path}: expected a JSON object: query id -> document id -> relevance")
        return qrels

    def is_complete(self, key: str, text_set: str) -> bool:
        return (_data_folder(self.path, key, text_set) / MANIFEST_FILE).exists()

    def array(self, key: str, text_set: str) -> ShardedArray:
        self._check_model(key)
        self._check_text_set(text_set)
        folder = _data_folder(self.path, key, text_set)
        manifest_path = folder / MANIFEST_FILE
        if not manifest_path.exists():
            raise StoreError(
                f"{folder}: embedding of {text_set} by {key!r} is incomplete (no manifest); "
                "rerun `smec embed` to finish it"
            )
        manifest = _read_json(manifest_path, "manifest")
        _check_manifest(manifest, manifest_path, key, text_set)
        arr = ShardedArray(folder, manifest, verify=self.verify_shards)
        if len(arr) != len(self.ids(text_set)):
            raise StoreError(
                f"{manifest_path}: {len(arr)} rows but {len(self.ids(text_set))} ids for {text_set}"
            )
        return arr

    def concat(
        self,
        models: Sequence[str] | None,
        text_set: str,
        normalization: str = "l2-concat-l2",
        weights: Sequence[float] | None = None,
    ) -> ConcatView:
        """The concatenation of ``models`` (default: all, in store order) for one text set."""
        keys = list(models) if models else self.models
        if not keys:
            raise StoreError(f"{self.path}: the store holds no finished models")
        return ConcatView([self.array(k, text_set) for k in keys], normalization, weights)

    def verify(self) -> None:
        """Recompute every finished shard's sha256 and scan it for NaN/Inf (``smec embed --verify``)."""
        for key in self.models:
            for ts in self.text_sets:
                if self.is_complete(key, ts):
                    folder = _data_folder(self.path, key, ts)
                    manifest = _read_json(folder / MANIFEST_FILE, "manifest")
                    _check_manifest(manifest, folder / MANIFEST_FILE, key, ts)
                    ShardedArray(folder, manifest, verify=False).verify()

    def summary(self) -> str:
        lines = [f"store {self.path}  (dataset {self.dataset}, format {self.meta['format_version']})"]
        sizes = {ts: len(self.ids(ts)) for ts in self.text_sets}
        lines.append("  text sets: " + ", ".join(f"{ts} {n:,}" for ts, n in sizes.items()))
        for key in self.models:
            done = [ts for ts in self.text_sets if self.is_complete(key, ts)]
            nbytes = 0
            for ts in done:
                folder = _data_folder(self.path, key, ts)
                manifest = _read_json(folder / MANIFEST_FILE, "manifest")
                _check_manifest(manifest, folder / MANIFEST_FILE, key, ts)
                nbytes += sum(
                    safe_child(folder, s["file"], what="shard file", error=StoreError).stat().st_size
                    for s in manifest["shards"]
                )
            status = (
                "complete"
                if len(done) == len(self.text_sets)
                else f"{len(done)}/{len(self.text_sets)} text sets"
            )
            lines.append(f"  {key:<24} dim {self.model_dim(key):>5}  {status:<12} {nbytes / 2**20:8.1f} MiB")
        return "\n".join(lines)

"""`StoreWriter`: create or resume a store, one (model, text set) at a time, shard by atomic shard.

Writing is resumable: every shard is written to a temporary name, flushed and atomically renamed, so a
``kill -9`` at any moment leaves only complete shards; the manifest is written last. Rerunning the same job
skips finished shards and produces files byte-identical to an uninterrupted run (encoders are deterministic for
a given chunk, and chunk boundaries are fixed by ``shard_rows``). A text set without a manifest is incomplete
and is never opened for reading.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import StoreError
from datamodules.files import atomic_write_bytes, atomic_write_json, npy_bytes
from datamodules.paths import check_name, safe_child
from datamodules.store.layout import (
    DEFAULT_SHARD_ROWS,
    DTYPES,
    FORMAT_VERSION,
    MANIFEST_FILE,
    STORE_FILE,
    WORKERS_DIR,
    check_manifest,
    check_meta,
    data_folder,
    ids_path,
    is_count,
    qrels_path,
    read_json,
)
from datamodules.store.verify import hash_and_scan, remember_verified


def _has_visible_entries(folder: Path) -> bool:
    return any(not entry.name.startswith(".") for entry in folder.iterdir())


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
        files = [(ids_path(self.path, name), ids, f"ids of {name}") for name, ids in self.text_sets.items()]
        for split, q in qrels.items():
            plain = {qid: {d: int(r) for d, r in docs.items()} for qid, docs in q.items()}
            files.append((qrels_path(self.path, split), plain, f"qrels of {split}"))
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: exists and is not a folder; expected a store folder")
        meta_path = self.path / STORE_FILE
        if meta_path.exists():
            meta = read_json(meta_path, "store manifest")
            check_meta(meta, meta_path)
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
            # Workers (datamodules.store.workers) write shards but no store.json: the merge writes it.
            sharded = (self.path / WORKERS_DIR).is_dir()
            if self.path.is_dir() and _has_visible_entries(self.path) and not sharded:
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
                if read_json(file, what) != obj:
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
        return (data_folder(self.path, key, text_set) / MANIFEST_FILE).exists()

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
        self._check_write(key, text_set, dim=dim, dtype=dtype, shard_rows=shard_rows)
        folder = data_folder(self.path, key, text_set)
        manifest_path = folder / MANIFEST_FILE
        if manifest_path.exists():
            manifest = read_json(manifest_path, "manifest")
            check_manifest(manifest, manifest_path, key, text_set)
            if on_rows:
                on_rows(manifest["rows"])
            return manifest
        self._write_skeleton()
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by a killed run; never looks complete
            stale.unlink()
        ids = self.text_sets[text_set]
        shards = _write_shards(folder, ids, encode, key, text_set, dim, dtype, shard_rows, on_rows)
        hash_shards(folder, shards, dim, dtype)
        return self.finish(
            key, text_set, dim=dim, model_info=model_info, dtype=dtype, shard_rows=shard_rows, shards=shards
        )

    def write_share(
        self,
        key: str,
        text_set: str,
        *,
        owns: Callable[[int], bool],
        dim: int,
        encode: Callable[[int, int], np.ndarray],
        dtype: str = "float16",
        shard_rows: int = DEFAULT_SHARD_ROWS,
        on_rows: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """One worker's part of :meth:`write`: only the shards ``i`` with ``owns(i)``, resuming like it.

        Nothing else is written (no ``store.json``, ids, qrels or manifest: the merge writes them), and only this
        worker's own temporary files are cleared, so workers sharing the folder never touch each other's files.
        Returns the owned shards' entries (file, rows, sha256), in order.
        """
        self._check_write(key, text_set, dim=dim, dtype=dtype, shard_rows=shard_rows)
        folder = data_folder(self.path, key, text_set)
        folder.mkdir(parents=True, exist_ok=True)
        ids = self.text_sets[text_set]
        for i in range(n_shards(len(ids), shard_rows)):
            if owns(i):
                for stale in folder.glob(f".{shard_name(i)}.*.tmp"):  # left by this worker, killed
                    stale.unlink()
        shards = _write_shards(folder, ids, encode, key, text_set, dim, dtype, shard_rows, on_rows, owns)
        hash_shards(folder, shards, dim, dtype)
        return shards

    def finish(
        self,
        key: str,
        text_set: str,
        *,
        dim: int,
        model_info: Mapping[str, Any],
        dtype: str,
        shard_rows: int,
        shards: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Write the manifest of one (model, text set) whose ``shards`` (every one, hashed) are on disk, then
        ``store.json``; the last step of :meth:`write`, and of a merge of workers' shards."""
        self._write_skeleton()
        folder = data_folder(self.path, key, text_set)
        manifest = {
            "format_version": FORMAT_VERSION,
            "model_key": key,
            "model": dict(model_info),
            "text_set": text_set,
            "dim": int(dim),
            "dtype": dtype,
            "rows": len(self.text_sets[text_set]),
            "shard_rows": shard_rows,
            "shards": shards,
        }
        atomic_write_json(folder / MANIFEST_FILE, manifest)
        for s in shards:  # hashed and scanned just now: readers in this process need not do it again
            remember_verified(folder / s["file"], s["sha256"])
        self.meta["models"][key] = {"dim": int(dim), "model": dict(model_info)}
        self._extend_model_order([key])
        atomic_write_json(self.path / STORE_FILE, self.meta)
        return manifest

    def _check_write(self, key: str, text_set: str, *, dim: int, dtype: str, shard_rows: int) -> None:
        if dtype not in DTYPES:
            raise StoreError(f"dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
        if text_set not in self.text_sets:
            raise StoreError(f"unknown text set {text_set!r}; this store has {sorted(self.text_sets)}")
        if not is_count(shard_rows, 1):
            raise StoreError(f"shard_rows must be a positive integer, got {shard_rows!r}")
        if not is_count(dim, 1):
            raise StoreError(f"model {key!r}: dim must be a positive integer, got {dim!r}")


def n_shards(rows: int, shard_rows: int) -> int:
    """Shards of a text set of ``rows`` rows (one, empty, for no rows)."""
    return max(1, -(-rows // shard_rows))


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.npy"


def _write_shards(
    folder: Path,
    ids: Sequence[str],
    encode: Callable[[int, int], np.ndarray],
    key: str,
    text_set: str,
    dim: int,
    dtype: str,
    shard_rows: int,
    on_rows: Callable[[int], None] | None,
    owns: Callable[[int], bool] = lambda i: True,
) -> list[dict[str, Any]]:
    """Every shard ``i`` with ``owns(i)`` of one (model, text set) that is missing or malformed, encoded and
    written atomically; the others kept. Returns those shards' manifest entries (file, rows), in order."""
    n = len(ids)
    shards = []
    for i in range(n_shards(n, shard_rows)):
        if not owns(i):
            continue
        start, stop = i * shard_rows, min(n, (i + 1) * shard_rows)
        shard_path = folder / shard_name(i)
        if not (shard_path.exists() and shard_ok(shard_path, stop - start, dim, dtype)):
            rows = np.asarray(encode(start, stop))
            _check_rows(rows, stop - start, dim, ids[start:stop], key, text_set, dtype)
            atomic_write_bytes(shard_path, npy_bytes(rows.astype(dtype)))
        if on_rows:
            on_rows(stop - start)
        shards.append({"file": shard_path.name, "rows": stop - start})
    return shards


def hash_shards(folder: Path, shards: list[dict[str, Any]], dim: int, dtype: str) -> None:
    """Add each shard's sha256 to its entry, refusing one that holds NaN/Inf."""
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


def shard_ok(path: Path, rows: int, dim: int, dtype: str) -> bool:
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

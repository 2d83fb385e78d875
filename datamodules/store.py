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
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import StoreError

FORMAT_VERSION = 1
STORE_FILE = "store.json"
MANIFEST_FILE = "manifest.json"
DTYPES = ("float16", "float32")
NORMALIZATIONS = ("l2-concat-l2", "l2-concat", "none")
DEFAULT_SHARD_ROWS = 8192


def model_key(spec: str) -> str:
    """A folder-safe key for a model spec (``sentence-transformers/all-MiniLM-L6-v2`` -> ``sentence-transformers__all-MiniLM-L6-v2``)."""
    key = spec.strip().rstrip("/").replace("\\", "/")
    if os.path.isabs(key):
        key = Path(key).name
    return key.replace("/", "__").replace(":", "--")


# ---------------------------------------------------------------------------------------------------------
# small file helpers


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
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


def _npy_bytes(array: np.ndarray) -> bytes:
    """Serialise to .npy in memory: the header is a pure function of shape and dtype, so bytes are reproducible."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _check_format_version(obj: Mapping[str, Any], path: Path) -> None:
    version = obj.get("format_version")
    if not isinstance(version, int):
        raise StoreError(f"{path}: no integer 'format_version'; expected a store written by smec")
    if version > FORMAT_VERSION:
        raise StoreError(
            f"{path}: written by a newer smec (store format {version}); this version reads format "
            f"<= {FORMAT_VERSION}. Upgrade smec or re-embed."
        )


# ---------------------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class TextSetSpec:
    """What a writer needs to know about one text set: its name and row ids."""

    name: str
    ids: Sequence[str]


class StoreWriter:
    """Creates or resumes a store for one dataset.

    Args:
        path: store folder (created if missing).
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
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: exists and is not a folder; expected a store folder")
        meta_path = self.path / STORE_FILE
        if meta_path.exists():
            meta = _read_json(meta_path, "store manifest")
            _check_format_version(meta, meta_path)
            if meta.get("dataset", {}).get("fingerprint") != fingerprint:
                raise StoreError(
                    f"{meta_path}: this store was built from dataset {meta.get('dataset', {}).get('name')!r} "
                    f"with different contents (fingerprint mismatch); use another --out folder"
                )
            self.meta = meta
        else:
            self.meta = {
                "format_version": FORMAT_VERSION,
                "dataset": {"name": dataset, "fingerprint": fingerprint},
                "text_sets": sorted(self.text_sets),
                "splits": sorted(qrels),
                "models": {},
            }
        for name, ids in self.text_sets.items():
            self._write_once(self.path / "ids" / f"{name}.json", ids, f"ids of {name}")
        for split, q in qrels.items():
            plain = {qid: {d: int(r) for d, r in docs.items()} for qid, docs in q.items()}
            self._write_once(self.path / "qrels" / f"{split}.json", plain, f"qrels of {split}")
        atomic_write_json(meta_path, self.meta)

    def _write_once(self, path: Path, obj: Any, what: str) -> None:
        if path.exists():
            if _read_json(path, what) != obj:
                raise StoreError(f"{path}: {what} differ from the dataset being embedded; use another --out")
            return
        atomic_write_json(path, obj)

    def is_complete(self, key: str, text_set: str) -> bool:
        return (self.path / key / text_set / MANIFEST_FILE).exists()

    def record_model_order(self, keys: Sequence[str]) -> None:
        """Remember the order models were asked for: it is the default concatenation order when reading."""
        if self._extend_model_order(keys):
            atomic_write_json(self.path / STORE_FILE, self.meta)

    def _extend_model_order(self, keys: Sequence[str]) -> bool:
        order = self.meta.setdefault("model_order", [])
        new = [k for k in keys if k not in order]
        order += new
        return bool(new)

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
                ``(stop - start, dim)``; called once per missing shard, so only missing work is done.
            on_rows: progress callback, called with the number of rows just written (or skipped).
        Returns:
            The manifest of the finished text set.
        """
        if dtype not in DTYPES:
            raise StoreError(f"dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
        if text_set not in self.text_sets:
            raise StoreError(f"unknown text set {text_set!r}; this store has {sorted(self.text_sets)}")
        folder = self.path / key / text_set
        manifest_path = folder / MANIFEST_FILE
        if manifest_path.exists():
            manifest = _read_json(manifest_path, "manifest")
            _check_format_version(manifest, manifest_path)
            if on_rows:
                on_rows(manifest["rows"])
            return manifest
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
            s["sha256"] = sha256_file(folder / s["file"])
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
    """

    def __init__(self, folder: Path, manifest: Mapping[str, Any]) -> None:
        self.folder = folder
        self.manifest = manifest
        self.dim = int(manifest["dim"])
        self.dtype = np.dtype(manifest["dtype"])
        self.rows = int(manifest["rows"])
        self._files = [folder / s["file"] for s in manifest["shards"]]
        counts = [int(s["rows"]) for s in manifest["shards"]]
        if sum(counts) != self.rows:
            raise StoreError(
                f"{folder / MANIFEST_FILE}: shard rows add up to {sum(counts)}, expected {self.rows}"
            )
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._maps: list[np.ndarray] = []
        self._data_offsets: list[int] = []
        for path, count in zip(self._files, counts):
            self._maps.append(self._open_shard(path, count))

    def _open_shard(self, path: Path, count: int) -> np.ndarray:
        expected = (count, self.dim)
        try:
            arr = np.load(path, mmap_mode="r")
        except FileNotFoundError:
            raise StoreError(f"{path}: shard listed in the manifest is missing") from None
        except ValueError as e:
            # np.load refuses a file shorter than its header says: a truncated shard.
            raise StoreError(f"{path}: unreadable or truncated shard ({e}); re-run `smec embed`") from None
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
                f"{path}: {path.stat().st_size} bytes, expected {expected_bytes}; truncated shard"
            )
        return arr

    def __reduce__(self) -> tuple[type, tuple[Path, Mapping[str, Any]]]:
        return (type(self), (self.folder, self.manifest))  # a memory map would pickle as its whole data

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
        return out

    def verify(self) -> None:
        """Recompute every shard's sha256 and compare with the manifest (reads the whole array)."""
        for path, shard in zip(self._files, self.manifest["shards"]):
            if sha256_file(path) != shard["sha256"]:
                raise StoreError(f"{path}: sha256 differs from the manifest; the shard is corrupt")


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
        return out

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
    """A finished (or partly finished) store, opened read-only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / STORE_FILE
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such store folder; create one with `smec embed`")
        self.meta = _read_json(meta_path, "store manifest")
        _check_format_version(self.meta, meta_path)
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
            self._ids[text_set] = _read_json(self.path / "ids" / f"{text_set}.json", f"ids of {text_set}")
        return self._ids[text_set]

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        if split not in self.splits:
            raise StoreError(f"{self.path}: split {split!r} is not in this store; it has {self.splits}")
        return _read_json(self.path / "qrels" / f"{split}.json", f"qrels of {split}")

    def is_complete(self, key: str, text_set: str) -> bool:
        return (self.path / key / text_set / MANIFEST_FILE).exists()

    def array(self, key: str, text_set: str) -> ShardedArray:
        self._check_model(key)
        self._check_text_set(text_set)
        folder = self.path / key / text_set
        manifest_path = folder / MANIFEST_FILE
        if not manifest_path.exists():
            raise StoreError(
                f"{folder}: embedding of {text_set} by {key!r} is incomplete (no manifest); "
                "rerun `smec embed` to finish it"
            )
        manifest = _read_json(manifest_path, "manifest")
        _check_format_version(manifest, manifest_path)
        arr = ShardedArray(folder, manifest)
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
        for key in self.models:
            for ts in self.text_sets:
                if self.is_complete(key, ts):
                    self.array(key, ts).verify()

    def summary(self) -> str:
        lines = [f"store {self.path}  (dataset {self.dataset}, format {self.meta['format_version']})"]
        sizes = {ts: len(self.ids(ts)) for ts in self.text_sets}
        lines.append("  text sets: " + ", ".join(f"{ts} {n:,}" for ts, n in sizes.items()))
        for key in self.models:
            done = [ts for ts in self.text_sets if self.is_complete(key, ts)]
            nbytes = sum(
                (self.path / key / ts / s["file"]).stat().st_size
                for ts in done
                for s in _read_json(self.path / key / ts / MANIFEST_FILE, "manifest")["shards"]
            )
            status = (
                "complete"
                if len(done) == len(self.text_sets)
                else f"{len(done)}/{len(self.text_sets)} text sets"
            )
            lines.append(f"  {key:<24} dim {self.model_dim(key):>5}  {status:<12} {nbytes / 2**20:8.1f} MiB")
        return "\n".join(lines)

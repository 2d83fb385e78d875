"""`ShardedArray`: one model's rows of one text set, and `RunReader`, which reads runs of them with ``preadv``.

The shards are validated against the manifest when opened (shape, dtype, size) and, with verification on,
hashed and scanned once per process (:mod:`datamodules.store.verify`); without it every read is scanned for
NaN/Inf. Either way a shard that fails raises :class:`StoreError` naming the file, before its rows reach a caller.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import StoreError
from datamodules.paths import safe_child
from datamodules.store.layout import MANIFEST_FILE
from datamodules.store.verify import (
    FiniteScanner,
    file_state,
    hash_and_scan,
    redo_hint,
    remember_verified,
    was_verified,
)


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
        return redo_hint(self.folder, self.manifest)

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
        if not force and was_verified(path, expected):
            return
        state = file_state(path)
        digest, bad = hash_and_scan(path, self._data_offsets[i], self.dtype)
        if digest != expected:
            raise StoreError(f"{path}: sha256 differs from the manifest; the shard is corrupt: {self.redo}")
        if bad is not None:
            row = (bad - self._data_offsets[i]) // (self.dim * self.dtype.itemsize)
            raise StoreError(f"{path}: row {row} holds NaN or Inf: {self.redo}")
        remember_verified(path, expected, state)

    def _check_finite(self, out: np.ndarray, rows: np.ndarray | None = None, start: int = 0) -> None:
        """Raise naming the shard if ``out`` (rows ``rows`` of the array, or ``start:start+len(out)``) holds NaN/Inf."""
        if self.verified or out.size == 0:
            return
        bad = FiniteScanner(self.dtype).first_bad(np.ascontiguousarray(out))
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

    def __getitem__(self, key: slice) -> np.ndarray:
        """Rows ``[start:stop]`` (a copy in the stored dtype), so that row-chunked code takes a store array as it
        takes a matrix (:func:`datamodules.store.combine.combine`); row indices: :meth:`take`."""
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"ShardedArray[{key!r}]: only row slices [start:stop]; take() reads row indices")
        start, stop, _ = key.indices(self.rows)
        return self.read(start, stop)

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
        starts, lengths, at = cut_runs(starts, lengths, at, array._offsets, edges)
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
        # Buffer b's calls are _buf_calls[b] : _buf_calls[b + 1] (looked up here once, not per read()).
        self._buf_calls = np.searchsorted(buf[calls[:-1]], np.arange(len(sizes) + 1)).tolist()
        self._size = size.tolist()
        self._begin = ((at - edges[buf]) * row_bytes).tolist()
        # Per call, precomputed: (shard, file offset, bytes, first run, end of its runs); read() runs once per
        # call: keep it lean.
        call_first = calls[:-1]
        want = np.add.reduceat(size, call_first) if len(call_first) else size[:0]
        self._call_plan = list(
            zip(
                shard[call_first].tolist(),
                pos[call_first].tolist(),
                want.tolist(),
                calls[:-1].tolist(),
                calls[1:].tolist(),
            )
        )
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
        lo, hi = self._buf_calls[b], self._buf_calls[b + 1]
        begin, size, fds, preadv = self._begin, self._size, self._fds, os.preadv
        for s, pos, want, first, last in self._call_plan[lo:hi]:
            fd = fds.get(s)
            if fd is None:
                fd = fds[s] = os.open(a._files[s], os.O_RDONLY)
            if last - first == 1:  # the usual call: one run
                iov = [view[begin[first] : begin[first] + want]]
            else:
                iov = [view[begin[i] : begin[i] + size[i]] for i in range(first, last)]
            got = preadv(fd, iov, pos)
            if got != want:
                _preadv_rest(fd, iov, pos, got, want, a._files[s])
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
        self._scanner = FiniteScanner(self.array.dtype)

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


def cut_runs(
    starts: np.ndarray, lengths: np.ndarray, at: np.ndarray, src_edges: np.ndarray, dst_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut runs where they cross a source edge (a shard boundary, say) or a destination edge (a buffer boundary).

    Run ``i`` moves ``lengths[i]`` rows from ``starts[i]`` to ``at[i]``; ``src_edges`` / ``dst_edges`` are sorted
    row positions. Returns the pieces (starts, lengths, at), each run's pieces in place of it, in order.
    Vectorised: a window's plan cuts about a thousand runs (it used to loop in Python over the runs that cross).
    """
    starts, lengths, at = (np.asarray(v, dtype=np.int64) for v in (starts, lengths, at))
    cuts = [
        _cuts_inside(np.asarray(e, dtype=np.int64), x, lengths)
        for e, x in ((src_edges, starts), (dst_edges, at))
    ]
    if not any(len(run) for run, _ in cuts):
        return starts, lengths, at
    # Every piece as (run, offset into the run): each run's own start plus its cuts, sorted, duplicates dropped.
    run = np.concatenate([np.arange(len(starts)), *(r for r, _ in cuts)])
    off = np.concatenate([np.zeros(len(starts), dtype=np.int64), *(o for _, o in cuts)])
    span = (
        int(lengths.max()) + 1
    )  # every offset is below it, so (run, offset) packs into one sortable integer
    run, off = np.divmod(np.unique(run * span + off), span)
    end = np.append(off[1:], 0)
    last = np.append(run[1:] != run[:-1], True)
    end[last] = lengths[run[last]]
    return starts[run] + off, end - off, at[run] + off


def _cuts_inside(edges: np.ndarray, lo: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(run, offset) of every edge strictly inside run ``i``'s rows ``lo[i] : lo[i] + n[i]``."""
    first = np.searchsorted(edges, lo, side="right")
    count = np.maximum(np.searchsorted(edges, lo + n, side="left") - first, 0)
    run = np.repeat(np.arange(len(lo)), count)
    within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    return run, edges[first[run] + within] - lo[run]


def _preadv_rest(fd: int, iov: list[memoryview], pos: int, got: int, want: int, path: Path) -> None:
    """After a short ``preadv`` of ``got`` of ``want`` bytes: read on until every buffer is full (a regular file
    reads short only at its end)."""
    while got < want:
        if got <= 0:
            raise StoreError(f"{path}: shard ended early; truncated after it was opened")
        pos, want = pos + got, want - got
        while got >= len(iov[0]):
            got -= len(iov.pop(0))
        iov[0] = iov[0][got:]
        got = os.preadv(fd, iov, pos)

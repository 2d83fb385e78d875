"""`BlockShuffleStream`: the rows of one or more text sets in block-shuffled, rank-sharded order.

Batches are read on the CPU straight from the stored shards into each batch's buffer (``preadv`` of runs of
rows, no memory map, so the resident set stays bounded whatever the store's size; see
:class:`datamodules.store.shards.RunReader`), in the stored dtype, as lists of per-model tensors.

Order: each epoch permutes blocks of ``block_rows`` contiguous rows with a generator seeded by
``(seed, epoch)``, takes ``window_blocks`` blocks at a time and shuffles runs of consecutive rows within that
window (``run_rows``; by default min(32, batch_size // 32), so that every batch mixes at least 32 places of its
window). One process streams the windows in turn (each window's last < batch_size rows are dropped; DataLoader
workers own whole windows). Under DDP the same sequence of windows, without the per-window drop, is cut into
one contiguous stretch per rank, the last one padded by wrapping around to the start (as DistributedSampler
pads): every row is streamed at least once per epoch, ranks read disjoint rows apart from that padding, and
every rank yields the same number of batches (DDP would hang otherwise). ``batch_scope`` says whether
``batch_size`` is the global batch of one optimizer step (default: each rank gets ``batch_size / world``
rows, so a DDP fit takes the steps one process takes) or each rank's batch. The order is a pure function of
(seed, epoch, world size, batch scope), so a resumed run replays the same epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from datamodules import distributed
from datamodules.store.shards import RunReader, ShardedArray, cut_runs
from datamodules.streams.batch_scope import rank_batch_size


@dataclass(frozen=True)
class Segment:
    """One text set's rows across the chosen models (all arrays have the same row count)."""

    name: str
    arrays: tuple[ShardedArray, ...]

    @property
    def rows(self) -> int:
        return len(self.arrays[0])


class BlockShuffleStream(IterableDataset):
    """Rows of one or more segments in block-shuffled, rank-sharded order, as lists of per-model tensors.

    Args:
        segments: the text sets to stream (e.g. corpus, queries/train).
        batch_size: rows per batch (per optimizer step across all ranks with ``batch_scope`` global).
        block_rows: rows read contiguously at a time.
        window_blocks: blocks shuffled together (a batch's rows come from anywhere in its window; reads are
            per run of rows, so a larger window costs no memory).
        run_rows: rows are shuffled in runs of this many consecutive rows (1 = a full row-level shuffle inside a
            window). Default None: min(32, batch_size // 32), so that a batch always mixes >= 32 places. Longer
            runs take fewer system calls (one per run; see experiments/bench/store_stream.py) and mix fewer
            places per batch; any other value changes every batch, hence every fit.
        shuffle: block permutation + in-window shuffle; off = store order (validation).
        seed: with the epoch, seeds the order.
        drop_last: one process: drop the last window's incomplete batch (every other window always drops its
            remainder). Under DDP the epoch is padded instead (see the module docstring).
        batch_scope: ``global`` or ``rank``, see :func:`rank_batch_size`.
    """

    def __init__(
        self,
        segments: Sequence[Segment],
        batch_size: int,
        block_rows: int = 16384,
        window_blocks: int = 2,
        run_rows: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        max_rows: int | None = None,
        batch_scope: str = "global",
    ) -> None:
        self.segments = list(segments)
        self.batch_size = batch_size
        self.block_rows = block_rows
        self.window_blocks = window_blocks
        self.run_rows = run_rows
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.max_rows = max_rows
        self.batch_scope = batch_scope
        rank_batch_size(batch_size, 1, batch_scope)  # a bad scope fails here, not in the fit loop
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _blocks(self) -> list[tuple[int, int, int]]:
        blocks = []
        budget = self.max_rows if self.max_rows is not None else float("inf")
        total = sum(seg.rows for seg in self.segments)
        # Small stores still get >= 4 blocks, so that the block permutation shuffles something.
        size = max(1, min(self.block_rows, total // 4))
        for s, seg in enumerate(self.segments):
            for start in range(0, seg.rows, size):
                stop = int(min(seg.rows, start + size, start + budget))
                if stop <= start:
                    break
                blocks.append((s, start, stop))
                budget -= stop - start
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        return blocks

    def _windows(self, blocks: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
        return [blocks[i : i + self.window_blocks] for i in range(0, len(blocks), self.window_blocks)]

    def _window_batches(self, window: list[tuple[int, int, int]], last: bool) -> int:
        rows = sum(b[2] - b[1] for b in window)
        # Windows are independent (no carry between them) so DataLoader workers can each own whole windows;
        # with shuffling, the < batch_size rows a window drops differ from epoch to epoch.
        return rows // self.batch_size + (1 if last and not self.drop_last and rows % self.batch_size else 0)

    def _chunk_rows(self) -> int:
        # Shuffle runs of this many consecutive rows: each run is one contiguous read, and by default every batch
        # still mixes at least 32 random places of the window.
        return max(1, min(32, self.batch_size // 32)) if self.run_rows is None else self.run_rows

    def _chunk_permutation(self, rows: int, index: int) -> np.ndarray:
        """The order of the chunks of a window's ``rows`` rows (window ``index`` of the epoch)."""
        return np.random.default_rng([self.seed, self.epoch, index]).permutation(
            -(-rows // self._chunk_rows())
        )

    def _window_order(self, rows: int, index: int) -> np.ndarray:
        """The shuffled order of a window's ``rows`` rows (window ``index`` of the epoch), in runs of a chunk."""
        chunk = self._chunk_rows()
        order = (self._chunk_permutation(rows, index)[:, None] * chunk + np.arange(chunk)).reshape(-1)
        return order[order < rows]

    def plan(self, rank: int, world: int) -> tuple[list[list[tuple[int, int, int]]], int]:
        """One process: its windows and the number of batches it yields this epoch (see :meth:`ddp_plan`)."""
        if world != 1:
            raise ValueError("plan() is the one-process order; ranks of a DDP world follow ddp_plan()")
        windows = self._windows(self._blocks())
        return windows, sum(self._window_batches(w, i == len(windows) - 1) for i, w in enumerate(windows))

    def ddp_plan(self, world: int) -> tuple[int, int, int]:
        """(rows in the epoch, rows per rank batch, batches per rank) under DDP; every rank yields that many."""
        rows = sum(stop - start for _, start, stop in self._blocks())
        per_rank = rank_batch_size(self.batch_size, world, self.batch_scope)
        return rows, per_rank, -(-rows // (per_rank * world))

    def __len__(self) -> int:
        rank, world = distributed.rank(), distributed.world_size()
        if not self.shuffle:
            return len(self._ranges()[rank::world])
        if world == 1:
            return self.plan(0, 1)[1]
        return self.ddp_plan(world)[2]

    def __iter__(self) -> Iterator[dict[str, list[torch.Tensor]]]:
        rank, world = distributed.rank(), distributed.world_size()
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if not self.shuffle:
            yield from self._iter_in_order(rank, world, worker, n_workers)
            return
        if world > 1:
            yield from self._iter_ddp(rank, world, worker, n_workers)
            return
        windows, n_batches = self.plan(0, 1)
        if worker < len(windows):
            self._will_need(windows[worker])
        for i, window, count in self._window_counts(windows, n_batches):
            if i % n_workers == worker:
                if i + n_workers < len(windows):
                    self._will_need(windows[i + n_workers])  # the disk reads it while this window streams
                yield from self._read_runs(window, *self._window_runs(window, count, i))

    def _window_counts(
        self, windows: list[list[tuple[int, int, int]]], n_batches: int
    ) -> Iterator[tuple[int, list[tuple[int, int, int]], int]]:
        """One process's :meth:`plan`: (index, window, batches it yields) of every window that yields any."""
        first = 0  # index of the window's first batch
        for i, window in enumerate(windows):
            count = min(self._window_batches(window, i == len(windows) - 1), max(0, n_batches - first))
            if count:
                yield i, window, count
            first += count

    def batch_rows(self) -> Iterator[np.ndarray]:
        """One process, shuffled: each batch's rows, as indices into the segments laid end to end, in the order
        they are read (file order within a batch); what iterating yields, without reading anything."""
        seg_start = np.cumsum([0] + [seg.rows for seg in self.segments])
        for i, window, count in self._window_counts(*self.plan(0, 1)):
            idx = self._window_rows(window, count, i)
            bounds = np.cumsum([0] + [stop - start for _, start, stop in window])
            block = np.searchsorted(bounds, idx, side="right") - 1
            rows = np.array([seg_start[s] + start for s, start, _ in window])[block] + idx - bounds[block]
            yield from np.split(rows, range(self.batch_size, len(rows), self.batch_size))

    def _iter_ddp(self, rank: int, world: int, worker: int, n_workers: int):
        """This rank's share of the epoch: a contiguous stretch of the one epoch sequence, padded at the end.

        The epoch sequence is what one process would stream (same blocks, windows and in-window orders) without
        the per-window drop: every window's shuffled rows, window after window. Rank r takes positions
        ``[r * M, (r + 1) * M)`` of it, M = batches x rows per batch, the last rank wrapping around to the
        sequence's start (DistributedSampler's padding): every row is streamed at least once per epoch and at
        most ``world x batch`` rows twice; ranks read mostly disjoint windows. DataLoader workers take the
        rank's batches round-robin, so the order does not depend on the number of workers.
        """
        blocks = self._blocks()
        windows = self._windows(blocks)
        starts = np.cumsum([0] + [sum(stop - start for _, start, stop in w) for w in windows])
        rows, per_rank, n_batches = self.ddp_plan(world)
        if rows == 0:
            return
        orders: dict[int, np.ndarray] = {}

        def sequence(pos: np.ndarray) -> np.ndarray:
            """Row of the blocks' concatenation at epoch-sequence positions ``pos`` (each in [0, rows))."""
            w = np.searchsorted(starts, pos, side="right") - 1
            out = np.empty_like(pos)
            for i in np.unique(w).tolist():
                if i not in orders:
                    if len(orders) > 2:  # a group spans at most a few windows
                        orders.pop(next(iter(orders)))
                    orders[i] = self._window_order(int(starts[i + 1] - starts[i]), i)
                at = w == i
                out[at] = starts[i] + orders[i][pos[at] - starts[i]]
            return out

        # Batches are planned and read a window's worth at a time (bounded memory whatever the store's size).
        group = max(n_workers, (self.window_blocks * self.block_rows // per_rank) // n_workers * n_workers)
        offset = rank * n_batches * per_rank
        bounds = np.cumsum([0] + [stop - start for _, start, stop in blocks])
        hinted: set[int] = set()

        def will_need(idx: np.ndarray) -> None:
            for k in np.unique(np.searchsorted(bounds, idx, side="right") - 1).tolist():
                if k not in hinted:
                    hinted.add(k)
                    s, start, stop = blocks[k]
                    for arr in self.segments[s].arrays:
                        arr.will_need(start, stop)

        def mine(g: int) -> np.ndarray:
            batches = np.arange(g, min(g + group, n_batches))
            batches = batches[batches % n_workers == worker]
            pos = (offset + batches[:, None] * per_rank + np.arange(per_rank)).reshape(-1) % rows
            return np.sort(sequence(pos).reshape(len(batches), per_rank), axis=1).reshape(-1)

        nxt = mine(0)
        for g in range(0, n_batches, group):
            idx = nxt
            will_need(idx)
            if g + group < n_batches:
                nxt = mine(g + group)
                will_need(nxt)  # the disk reads it while this group streams
            if len(idx):
                yield from self._read_rows(blocks, idx, [per_rank] * (len(idx) // per_rank))

    def _will_need(self, window: list[tuple[int, int, int]]) -> None:
        # A store larger than the page cache is read from disk in the window's own order (large sequential
        # reads) instead of run by run: measured ~5-8% faster from a cold cache, free from a warm one.
        for s, start, stop in window:
            for arr in self.segments[s].arrays:
                arr.will_need(start, stop)

    def _ranges(self) -> list[tuple[int, int]]:
        """Contiguous global row ranges of the in-order batches (segments laid end to end)."""
        total = sum(seg.rows for seg in self.segments)
        if self.max_rows is not None:
            total = min(total, self.max_rows)
        return [(i, min(total, i + self.batch_size)) for i in range(0, total, self.batch_size)]

    def _iter_in_order(self, rank: int, world: int, worker: int, n_workers: int):
        # Batch k goes to rank k % world, every batch to one rank (the ranks' counts may differ by one: nothing
        # in validation is a collective per batch, and the loss metrics weigh each batch by its rows).
        bounds = np.cumsum([0] + [seg.rows for seg in self.segments])
        for j, (lo, hi) in enumerate(self._ranges()[rank::world]):
            if j % n_workers != worker:
                continue
            parts: list[list[np.ndarray]] = [[] for _ in self.segments[0].arrays]
            for s, seg in enumerate(self.segments):
                a, b = max(lo, bounds[s]), min(hi, bounds[s + 1])
                if a < b:
                    for m, arr in enumerate(seg.arrays):
                        parts[m].append(arr.read(int(a - bounds[s]), int(b - bounds[s])))
            yield {"x": [torch.from_numpy(np.concatenate(p) if len(p) > 1 else p[0]) for p in parts]}

    def _window_rows(self, window: list[tuple[int, int, int]], count: int, index: int) -> np.ndarray:
        """The rows of the first ``count`` batches of window ``index`` (positions in its blocks laid end to end),
        batch after batch, each batch's in file order."""
        order = self._window_order(sum(stop - start for _, start, stop in window), index)
        order = order[: count * self.batch_size]
        # One sort of the full batches as rows of a matrix, then the tail.
        full = len(order) // self.batch_size * self.batch_size
        return np.concatenate(
            [np.sort(order[:full].reshape(-1, self.batch_size), axis=1).reshape(-1), np.sort(order[full:])]
        )

    def _window_runs(
        self, window: list[tuple[int, int, int]], count: int, index: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """What :meth:`_window_rows` lists row by row, as runs: (positions in the window's blocks laid end to end,
        lengths, destinations in the batches laid end to end, batch sizes), each batch's runs in position order.

        Planned per chunk, not per row (about a thousand runs instead of 32,768 rows a window): the plan costs a
        fraction of what reading the window does (experiments/bench/store_stream.py).
        """
        bounds = np.cumsum([0] + [stop - start for _, start, stop in window])
        rows, chunk, batch = int(bounds[-1]), self._chunk_rows(), self.batch_size
        pos = self._chunk_permutation(rows, index).astype(np.int64) * chunk
        length = np.minimum(chunk, rows - pos)
        seq = np.cumsum(length) - length  # where each chunk lands in the window's shuffled sequence
        total = min(rows, count * batch)
        # Pieces: chunks cut where they cross a block (not contiguous in the file) or a batch edge.
        pos, length, seq = cut_runs(
            pos, length, seq, bounds[1:-1], np.append(np.arange(batch, total, batch), total)
        )
        keep = seq < total
        pos, length, seq = pos[keep], length[keep], seq[keep]
        order = np.lexsort((pos, seq // batch))  # batch after batch, each in position order
        pos, length = pos[order], length[order]
        sizes = [min(batch, total - lo) for lo in range(0, total, batch)]
        return pos, length, np.cumsum(length) - length, sizes

    def _read_rows(
        self, blocks: list[tuple[int, int, int]], idx: np.ndarray, sizes: list[int]
    ) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Batches of ``sizes`` rows: rows ``idx`` of the blocks laid end to end, each batch's in file order."""
        bounds = np.cumsum([0] + [stop - start for _, start, stop in blocks])
        # Cut into runs: where rows stop being consecutive, cross a block edge or start a batch.
        edges = np.cumsum([0, *sizes])
        block = np.searchsorted(bounds, idx, side="right") - 1
        batch_start = np.zeros(len(idx), dtype=bool)
        batch_start[edges[:-1][edges[:-1] < len(idx)]] = True
        first = np.flatnonzero(
            (np.diff(idx, prepend=-2) != 1) | (np.diff(block, prepend=-1) != 0) | batch_start
        )
        yield from self._read_runs(blocks, idx[first], np.diff(first, append=len(idx)), first, sizes)

    def _read_runs(
        self,
        blocks: list[tuple[int, int, int]],
        pos: np.ndarray,
        lengths: np.ndarray,
        at: np.ndarray,
        sizes: list[int],
    ) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Batches of ``sizes`` rows: run ``i`` is ``lengths[i]`` rows at position ``pos[i]`` of the blocks laid
        end to end (inside one block), bound for row ``at[i]`` of the batches laid end to end."""
        # Each batch is read straight from the shards into its own buffer, one pread per run of consecutive rows
        # (see RunReader): nothing is mapped, so the resident set stays at a few batches whatever the window.
        block_start = np.array([start for _, start, _ in blocks])
        block_segment = np.array([s for s, _, _ in blocks])
        bounds = np.cumsum([0] + [stop - start for _, start, stop in blocks])
        block = np.searchsorted(bounds, pos, side="right") - 1
        starts = block_start[block] + pos - bounds[block]
        segment = block_segment[block]
        segments = np.unique(segment).tolist()
        readers = [
            [
                RunReader(self.segments[s].arrays[m], starts[sel], lengths[sel], at[sel], sizes)
                for s in segments
                for sel in [segment == s]
            ]
            for m in range(len(self.segments[0].arrays))
        ]
        try:
            for b, n in enumerate(sizes):
                batch = []
                for model_readers in readers:
                    array = model_readers[0].array
                    out = np.empty((n, array.dim), dtype=array.dtype)
                    for reader in model_readers:
                        reader.read(b, out)
                    batch.append(torch.from_numpy(out))
                yield {"x": batch}
        finally:
            for reader in (r for model_readers in readers for r in model_readers):
                reader.close()

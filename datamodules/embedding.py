"""`EmbeddingDataModule`: stream frozen embeddings from the store into training, without loading the store.

Training batches are read on the CPU straight from the stored shards into each batch's buffer (``preadv`` of
runs of rows, no memory map, so the resident set stays bounded whatever the store's size; see
:class:`datamodules.store.RunReader`) in the stored dtype; the per-model L2 normalisation,
weighting and concatenation (:func:`datamodules.store.combine`'s recipe) run in ``on_after_batch_transfer``,
i.e. on the accelerator, where they are nearly free.

Order: each epoch permutes blocks of ``block_rows`` contiguous rows with a generator seeded by
``(seed, epoch)``, takes ``window_blocks`` blocks at a time and shuffles runs of up to 32 rows within that
window. One process streams the windows in turn (each window's last < batch_size rows are dropped; DataLoader
workers own whole windows). Under DDP the same sequence of windows, without the per-window drop, is cut into
one contiguous stretch per rank, the last one padded by wrapping around to the start (as DistributedSampler
pads): every row is streamed at least once per epoch, ranks read disjoint rows apart from that padding, and
every rank yields the same number of batches (DDP would hang otherwise). ``batch_scope`` says whether
``batch_size`` is the global batch of one optimizer step (default: each rank gets ``batch_size / world``
rows, so a DDP fit takes the steps one process takes) or each rank's batch. The order is a pure function of
(seed, epoch, world size, batch scope), so a resumed run replays the same epoch.

Batch formats (dicts; each value is a list of per-model tensors until ``on_after_batch_transfer`` combines
it into one float32 tensor):
    unsupervised: ``{"x": (B, D) float32}`` — corpus rows (and optionally train queries)
    supervised:   ``{"q": (B, D), "d": (B, D)}`` — (query, relevant document) pairs from train qrels
    both:         all three keys; the pair stream cycles, the row stream sets the epoch length
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules import distributed
from datamodules.errors import InputError
from datamodules.store import NORMALIZATIONS, EmbeddingStore, RunReader, ShardedArray, combine

MODES = ("unsupervised", "supervised", "both")
T = TypeVar("T")


def combine_torch(
    blocks: Sequence[torch.Tensor],
    normalization: str = "l2-concat-l2",
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Torch twin of :func:`datamodules.store.combine` (same maths, runs on any device, returns float32)."""
    parts = []
    for i, b in enumerate(blocks):
        b = b.float()
        if normalization != "none":
            b = torch.nn.functional.normalize(b, dim=-1)
        if weights is not None:
            b = b * weights[i]
        parts.append(b)
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    if normalization == "l2-concat-l2" and (len(parts) > 1 or weights is not None):
        out = torch.nn.functional.normalize(out, dim=-1)
    return out


_END = object()


def read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead of the consumer (0: inline).

    Order is unchanged; an exception in the thread is raised in the consumer; when the consumer stops early,
    the thread is stopped and ``items`` closed (so its ``finally`` blocks run).
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                q.put((item, None))
                if stop.is_set():
                    return
            q.put((_END, None))
        except BaseException as e:  # handed to the consumer, which raises it
            q.put((_END, e))

    thread = threading.Thread(target=produce, name="smec-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get(timeout=0.01)
        close = getattr(items, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class Segment:
    """One text set's rows across the chosen models (all arrays have the same row count)."""

    name: str
    arrays: tuple[ShardedArray, ...]

    @property
    def rows(self) -> int:
        return len(self.arrays[0])


BATCH_SCOPES = ("global", "rank")


def rank_batch_size(batch_size: int, world: int, scope: str = "global") -> int:
    """Rows each rank's batch holds: ``batch_size / world`` for scope ``global``, ``batch_size`` for ``rank``.

    ``global`` (the default) keeps one optimizer step = ``batch_size`` rows whatever the world size, so a DDP fit
    takes as many steps per epoch, on batches as large, as one process: the recipes' epoch budgets, LR schedules
    and patience mean the same thing. ``rank`` is the usual DDP scale-out (each step sees ``world`` times more
    rows, an epoch takes ``world`` times fewer steps; learning rate and budgets are then the user's to retune).
    """
    if scope not in BATCH_SCOPES:
        raise InputError(f"data.batch_scope: {scope!r} is not one of {', '.join(BATCH_SCOPES)}")
    if scope == "rank" or world == 1:
        return batch_size
    if batch_size % world:
        raise InputError(
            f"data.batch_size: {batch_size} rows cannot be split evenly over {world} DDP processes "
            f"(data.batch_scope: global); use a multiple of {world}, or data.batch_scope: rank"
        )
    return batch_size // world


class BlockShuffleStream(IterableDataset):
    """Rows of one or more segments in block-shuffled, rank-sharded order, as lists of per-model tensors.

    Args:
        segments: the text sets to stream (e.g. corpus, queries/train).
        batch_size: rows per batch (per optimizer step across all ranks with ``batch_scope`` global).
        block_rows: rows read contiguously at a time.
        window_blocks: blocks shuffled together (a batch's rows come from anywhere in its window; reads are
            per run of rows, so a larger window costs no memory).
        chunk_rows: rows are shuffled in runs of up to this many consecutive rows (capped at batch_size // 32,
            so that a batch always mixes >= 32 places); 1 = full row-level shuffle inside a window.
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
        chunk_rows: int = 32,
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
        self.chunk_rows = chunk_rows
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

    def _window_order(self, rows: int, index: int) -> np.ndarray:
        """The shuffled order of a window's ``rows`` rows (window ``index`` of the epoch), in runs of ``chunk``."""
        # Shuffle runs of `chunk` consecutive rows: contiguous reads keep streaming at memory speed, and every
        # batch still mixes at least 32 random places of the window.
        chunk = max(1, min(self.chunk_rows, self.batch_size // 32))
        n_chunks = -(-rows // chunk)
        chunk_order = np.random.default_rng([self.seed, self.epoch, index]).permutation(n_chunks)
        order = (chunk_order[:, None] * chunk + np.arange(chunk)).reshape(-1)
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
        first = 0  # index of the window's first batch
        if worker < len(windows):
            self._will_need(windows[worker])
        for i, window in enumerate(windows):
            count = min(self._window_batches(window, i == len(windows) - 1), max(0, n_batches - first))
            if count and i % n_workers == worker:
                if i + n_workers < len(windows):
                    self._will_need(windows[i + n_workers])  # the disk reads it while this window streams
                yield from self._read_window(window, count, i)
            first += count

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

    def _read_window(
        self, window: list[tuple[int, int, int]], count: int, index: int
    ) -> Iterator[dict[str, list[torch.Tensor]]]:
        order = self._window_order(sum(stop - start for _, start, stop in window), index)
        order = order[: count * self.batch_size]
        # Each batch's rows in file order.
        idx = np.concatenate(
            [np.sort(order[i : i + self.batch_size]) for i in range(0, len(order), self.batch_size)]
        )
        sizes = [min(self.batch_size, len(idx) - lo) for lo in range(0, len(idx), self.batch_size)]
        yield from self._read_rows(window, idx, sizes)

    def _read_rows(
        self, blocks: list[tuple[int, int, int]], idx: np.ndarray, sizes: list[int]
    ) -> Iterator[dict[str, list[torch.Tensor]]]:
        """Batches of ``sizes`` rows: rows ``idx`` of the blocks laid end to end, each batch's in file order."""
        # Each batch is read straight from the shards into its own buffer, one pread per run of consecutive rows
        # (see RunReader): nothing is mapped, so the resident set stays at a few batches whatever the window.
        block_start = np.array([start for _, start, _ in blocks])
        block_segment = np.array([s for s, _, _ in blocks])
        bounds = np.cumsum([0] + [stop - start for _, start, stop in blocks])
        # Plan all the batches at once (vectorised), cut into runs.
        edges = np.cumsum([0, *sizes])
        block = np.searchsorted(bounds, idx, side="right") - 1
        batch_start = np.zeros(len(idx), dtype=bool)
        batch_start[edges[:-1][edges[:-1] < len(idx)]] = True
        first = np.flatnonzero(
            (np.diff(idx, prepend=-2) != 1) | (np.diff(block, prepend=-1) != 0) | batch_start
        )
        lengths = np.diff(first, append=len(idx))
        starts = block_start[block[first]] + idx[first] - bounds[block[first]]
        segment = block_segment[block[first]]
        segments = np.unique(segment).tolist()
        readers = [
            [
                RunReader(self.segments[s].arrays[m], starts[sel], lengths[sel], first[sel], sizes)
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


class PairStream(IterableDataset):
    """(query, relevant document) row pairs from a qrels split, shuffled per epoch and dealt to ranks.

    One process: ``len(pairs) // batch_size`` batches of the epoch's permutation (the last partial one dropped).
    DDP: rank r takes a contiguous stretch of the same permutation, padded by wrapping around to its start, so
    that every pair is used at least once per epoch and every rank yields the same number of batches; a rank's
    batch holds ``batch_size / world`` pairs with ``batch_scope`` global (see :func:`rank_batch_size`).
    """

    def __init__(
        self,
        queries: Sequence[ShardedArray],
        corpus: Sequence[ShardedArray],
        pairs: np.ndarray,
        batch_size: int,
        seed: int = 0,
        cycle: bool = False,
        batch_scope: str = "global",
    ) -> None:
        self.queries = list(queries)
        self.corpus = list(corpus)
        self.pairs = pairs
        self.batch_size = batch_size
        self.seed = seed
        self.cycle = cycle
        self.batch_scope = batch_scope
        rank_batch_size(batch_size, 1, batch_scope)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _plan(self, world: int) -> tuple[int, int]:
        """(pairs per rank batch, batches per rank) this epoch."""
        if world == 1:
            return self.batch_size, len(self.pairs) // self.batch_size
        per_rank = rank_batch_size(self.batch_size, world, self.batch_scope)
        return per_rank, -(-len(self.pairs) // (per_rank * world))

    def __len__(self) -> int:
        world = distributed.world_size()
        return self._plan(world)[1]

    def _epoch_batches(self, epoch: int, rank: int, world: int) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 2])
        order = rng.permutation(len(self.pairs))
        per_rank, n_batches = self._plan(world)
        if world > 1:
            order = order[(rank * n_batches * per_rank + np.arange(n_batches * per_rank)) % len(order)]
        for i in range(n_batches):
            yield self.pairs[order[i * per_rank : (i + 1) * per_rank]]

    def __iter__(self) -> Iterator[dict[str, list[torch.Tensor]]]:
        rank, world = distributed.rank(), distributed.world_size()
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch
        while True:
            for i, batch in enumerate(self._epoch_batches(epoch, rank, world)):
                if i % n_workers == worker:
                    q = [torch.from_numpy(a.take(batch[:, 0])) for a in self.queries]
                    d = [torch.from_numpy(a.take(batch[:, 1])) for a in self.corpus]
                    yield {"q": q, "d": d}
            if not self.cycle:
                return
            epoch += 1_000_003  # a fresh order for the next pass, disjoint from later epochs' seeds


class _JointStream(IterableDataset):
    """Row batches zipped with an endlessly cycling pair stream (mode "both")."""

    def __init__(self, rows: BlockShuffleStream, pairs: PairStream) -> None:
        self.rows, self.pairs = rows, pairs

    def set_epoch(self, epoch: int) -> None:
        self.rows.set_epoch(epoch)
        self.pairs.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        pairs = iter(self.pairs)
        for rows in self.rows:
            yield {**rows, **next(pairs)}


class _EpochForwardingSampler:
    """Lightning calls ``set_epoch`` on a loader's sampler each epoch; forward it to the iterable dataset."""

    def __init__(self, sampler: Any, dataset: Any) -> None:
        self._sampler, self._dataset = sampler, dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._dataset.set_epoch(epoch)

    def __iter__(self):
        return iter(self._sampler)

    def __len__(self) -> int:
        return len(self._sampler)


class StreamLoader(DataLoader):
    """A DataLoader over an epoch-aware iterable dataset (``persistent_workers`` would freeze the epoch).

    ``read_ahead``: with ``num_workers=0``, batches read ahead by a background thread (see :func:`read_ahead`).

    Resumable mid-epoch: :meth:`state_dict` is ``{"epoch", "batches"}`` (batches handed out in the epoch so far),
    which Lightning saves in every checkpoint of a fit. The order is a pure function of (seed, epoch), so after
    :meth:`load_state_dict` the next iteration replays that epoch and drops the batches already trained on (read
    and discarded: the datasets need no skipping logic of their own). It also does not draw the base seed, which
    the epoch's first iteration drew before the checkpoint was written; so a resumed fit draws from the global
    generator exactly what the uninterrupted fit draws. (Resuming from an end-of-epoch state, Lightning creates
    one iterator that finishes the saved epoch, which yields nothing, and a fresh one for the next epoch.)
    """

    def __init__(self, dataset: Any, *args: Any, read_ahead: int = 0, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        self.read_ahead = read_ahead
        self._yielded = 0  # batches handed out in epoch _iter_epoch
        self._iter_epoch = 0
        # (epoch, batches already trained on) from load_state_dict, for the next iteration
        self._resume: tuple[int, int] | None = None

    @property
    def sampler(self):  # type: ignore[override]
        return self._epoch_sampler

    @sampler.setter
    def sampler(self, value) -> None:
        self._epoch_sampler = _EpochForwardingSampler(value, self.dataset)

    def state_dict(self) -> dict[str, int]:
        epoch = self._epoch_sampler.epoch
        # Between Lightning's set_epoch and the new epoch's iterator, nothing of the new epoch was handed out.
        return {"epoch": epoch, "batches": self._yielded if self._iter_epoch == epoch else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        # The epoch is left to Lightning's set_epoch: a resumed fit measures the loader's length before it, at
        # the same epoch as the uninterrupted fit did (the length can differ from epoch to epoch).
        epoch, batches = int(state["epoch"]), int(state["batches"])
        self._resume = (epoch, batches) if batches > 0 else None

    def __iter__(self):
        resume, self._resume = self._resume, None
        self._iter_epoch = self._epoch_sampler.epoch
        self._yielded = 0 if resume is None else resume[1]
        in_process = self.num_workers == 0 and not self.pin_memory
        if resume is not None:
            return self._resumed(resume, in_process)
        if in_process:
            # DataLoader draws its workers' base seed from the global generator on every iter(); draw it too, so
            # a seeded run's random stream (ADS's Gumbel noise, say) is the same whichever path loads the data.
            self._draw_base_seed()
            # In-process loading: the dataset already yields batches of tensors, so DataLoader's per-batch work
            # (a profiler record and a conversion pass, ~35 us a batch, 8% of a 1024-row fp16 read) buys nothing.
            return self._counted(read_ahead(iter(self.dataset), self.read_ahead), 0)
        return self._counted(super().__iter__(), 0)

    def _draw_base_seed(self) -> None:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)

    def _resumed(self, resume: tuple[int, int], in_process: bool):
        # Runs at the first batch, after Lightning's set_epoch: DataLoader workers copy the dataset (and its
        # epoch) when started, and an iterator that ends up serving a later epoch than the saved one (Lightning
        # moved on) must start that epoch afresh, with its draw.
        epoch = self._epoch_sampler.epoch
        skip = resume[1] if resume[0] == epoch else 0
        self._iter_epoch, self._yielded = epoch, skip
        if in_process:
            if not skip:
                self._draw_base_seed()
            batches = read_ahead(iter(self.dataset), self.read_ahead)
        else:
            state = torch.get_rng_state()
            batches = super().__iter__()
            if skip:  # the interrupted epoch drew the workers' base seed before the checkpoint
                torch.set_rng_state(state)
        yield from self._counted(batches, skip)

    def _counted(self, batches: Iterator[Any], skip: int):
        self._yielded = skip
        try:
            for i, batch in enumerate(batches):
                if i >= skip:
                    self._yielded += 1
                    yield batch
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # stops a read-ahead thread when the consumer stops early


@dataclass
class EvalData:
    """What the retrieval evaluator needs for one split: combined float32 inputs plus ids and qrels."""

    queries: np.ndarray
    corpus: np.ndarray
    query_ids: list[str]
    corpus_ids: list[str]
    qrels: dict[str, dict[str, int]]
    input_dim: int


class EmbeddingDataModule(L.LightningDataModule):
    """Batches of (concatenated) frozen embeddings from a store made by ``smec embed``.

    Args:
        store: the store folder.
        models: model keys to concatenate, in order (default: every model in the store, sorted).
        normalization: ``l2-concat-l2`` (paper: normalise each, concatenate, renormalise), ``l2-concat``, ``none``.
        model_weights: optional per-model weights applied after the per-model normalisation (not ``weights``:
            Lightning merges data and model hyper-parameters, and the losses' ``weights`` would clash).
        mode: ``unsupervised`` (rows), ``supervised`` (train query–document pairs) or ``both``.
        include_train_queries: unsupervised rows also include the train split's query embeddings.
        train_split / val_split / test_split: qrels splits for pairs, validation and test evaluation.
        batch_size: rows (or pairs) per optimizer step; under DDP see ``batch_scope``.
        batch_scope: what ``batch_size`` counts under DDP: ``global`` (default; each of the N processes gets
            ``batch_size / N`` rows, so a DDP fit takes the same optimizer steps per epoch, on batches of the same
            size, as one process, and the recipes' epoch budgets and LR schedules carry over; ``batch_size``
            must be a multiple of N) or ``rank`` (each process gets ``batch_size`` rows: N times more rows per
            step and N times fewer steps per epoch; retune lr and budgets). One process: no difference.
        block_rows / window_blocks: streaming granularity, see :class:`BlockShuffleStream`.
        seed: data order seed (with the epoch).
        num_workers: DataLoader workers per rank (0 reads in the training process).
        val_rows: corpus rows streamed for the validation loss (the retrieval metrics use the whole split).
        read_ahead: with ``num_workers=0``, batches a background thread reads ahead of the training step (the
            reads release the GIL, so they overlap the step). Default: 2 when the trainer runs on an
            accelerator (the step mostly waits on the device), 0 on CPU (measured: with nothing to overlap, the
            thread hand-off costs ~8% of the read).
        verify: check each shard's sha256 against the store's manifest, and scan it for NaN/Inf, when it is
            first opened (see :class:`datamodules.store.EmbeddingStore`); ``false`` skips the hash, for very
            large stores, and scans every batch for NaN/Inf instead. Default (``null``): on, unless
            ``SMEC_VERIFY_STORE=0``.
    """

    def __init__(
        self,
        store: str,
        models: list[str] | None = None,
        normalization: str = "l2-concat-l2",
        model_weights: list[float] | None = None,
        mode: str = "unsupervised",
        include_train_queries: bool = True,
        train_split: str = "train",
        val_split: str = "dev",
        test_split: str = "test",
        batch_size: int = 256,
        block_rows: int = 16384,
        window_blocks: int = 2,
        seed: int = 0,
        num_workers: int = 0,
        val_rows: int = 4096,
        read_ahead: int | None = None,
        verify: bool | None = None,
        batch_scope: str = "global",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if mode not in MODES:
            raise InputError(f"data.mode: {mode!r} is not one of {', '.join(MODES)}")
        if normalization not in NORMALIZATIONS:
            raise InputError(
                f"data.normalization: {normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
            )
        if batch_size < 1:
            raise InputError(f"data.batch_size: expected a positive integer, got {batch_size}")
        rank_batch_size(batch_size, 1, batch_scope)  # a bad scope name
        self.store_path = Path(store)
        self.models = models
        self.normalization = normalization
        self.model_weights = model_weights
        self.mode = mode
        self.include_train_queries = include_train_queries
        self.train_split, self.val_split, self.test_split = train_split, val_split, test_split
        self.batch_size = batch_size
        self.block_rows, self.window_blocks = block_rows, window_blocks
        self.seed = seed
        self.num_workers = num_workers
        self.val_rows = val_rows
        self.read_ahead = read_ahead
        self.verify = verify
        self.batch_scope = batch_scope
        self._store: EmbeddingStore | None = None
        self._eval_data: dict[str, EvalData] = {}

    # -- store access -----------------------------------------------------------------------------------
    @property
    def store(self) -> EmbeddingStore:
        if self._store is None:
            self._store = EmbeddingStore(self.store_path, verify=self.verify)
        return self._store

    @property
    def model_keys(self) -> list[str]:
        keys = list(self.models) if self.models else self.store.models
        for k in keys:
            self.store.model_dim(k)  # clear error for an unknown model
        if self.model_weights is not None and len(self.model_weights) != len(keys):
            raise InputError(
                f"data.model_weights has {len(self.model_weights)} entries for {len(keys)} models {keys}"
            )
        return keys

    @property
    def input_dim(self) -> int:
        """Width of the concatenated input; LightningCLI links it to the model's ``input_dim``."""
        return sum(self.store.model_dim(k) for k in self.model_keys)

    def _segment(self, text_set: str) -> Segment:
        return Segment(text_set, tuple(self.store.array(k, text_set) for k in self.model_keys))

    def _pairs(self, split: str) -> np.ndarray:
        text_set = f"queries/{split}"
        qpos = {q: i for i, q in enumerate(self.store.ids(text_set))}
        dpos = {d: i for i, d in enumerate(self.store.ids("corpus"))}
        pairs = [
            (qpos[q], dpos[d])
            for q, docs in self.store.qrels(split).items()
            for d, rel in docs.items()
            if rel > 0 and q in qpos and d in dpos
        ]
        if not pairs:
            raise InputError(f"{self.store_path}: split {split!r} has no (query, relevant document) pairs")
        return np.asarray(pairs, dtype=np.int64)

    def setup(self, stage: str) -> None:
        """Open (and, with verification on, check) every shard the stage reads, before any step runs: a corrupt
        or non-finite store fails here, naming the file, not after the first epoch's work. Under DDP every process
        also checks that ``data.batch_size`` splits over the ranks (see :meth:`check_world_size`)."""
        self.check_world_size(distributed.world_size())
        train = self.mode != "unsupervised" or self.include_train_queries
        needed = {
            "fit": [
                "corpus",
                *([f"queries/{self.train_split}"] if train else []),
                f"queries/{self.val_split}",
            ],
            "validate": ["corpus", f"queries/{self.val_split}"],
            "test": ["corpus", f"queries/{self.test_split}"],
            "predict": self.predict_text_sets,
        }.get(stage, [])
        for text_set in needed:
            if text_set in self.store.text_sets:
                self._segment(text_set)

    # -- loaders ------------------------------------------------------------------------------------------
    def check_world_size(self, world: int) -> None:
        """InputError when ``data.batch_size`` cannot be split over ``world`` processes (``batch_scope`` global).

        `smec fit` calls it before DDP starts its processes; :meth:`setup` calls it again in every process.
        """
        rank_batch_size(self.batch_size, world, self.batch_scope)

    def _row_stream(self, shuffle: bool = True, max_rows: int | None = None, train: bool = True):
        segments = [self._segment("corpus")]
        if train and self.include_train_queries and f"queries/{self.train_split}" in self.store.text_sets:
            segments.append(self._segment(f"queries/{self.train_split}"))
        return BlockShuffleStream(
            segments,
            self.batch_size,
            self.block_rows,
            self.window_blocks,
            shuffle=shuffle,
            seed=self.seed,
            drop_last=train,
            max_rows=max_rows,
            batch_scope=self.batch_scope,
        )

    def _pair_stream(self, cycle: bool) -> PairStream:
        queries = self._segment(f"queries/{self.train_split}").arrays
        corpus = self._segment("corpus").arrays
        pairs = self._pairs(self.train_split)
        return PairStream(queries, corpus, pairs, self.batch_size, self.seed, cycle, self.batch_scope)

    def _loader(self, dataset) -> StreamLoader:
        depth = self.read_ahead
        if depth is None:
            trainer = getattr(self, "trainer", None)
            depth = 2 if trainer is not None and trainer.strategy.root_device.type != "cpu" else 0
        return StreamLoader(
            dataset, batch_size=None, num_workers=self.num_workers, persistent_workers=False, read_ahead=depth
        )

    def train_dataloader(self) -> StreamLoader:
        if self.mode == "unsupervised":
            return self._loader(self._row_stream())
        if self.mode == "supervised":
            return self._loader(self._pair_stream(cycle=False))
        return self._loader(_JointStream(self._row_stream(), self._pair_stream(cycle=True)))

    def val_dataloader(self) -> StreamLoader:
        return self._loader(self._row_stream(shuffle=False, max_rows=self.val_rows, train=False))

    def test_dataloader(self) -> StreamLoader:
        return self.val_dataloader()

    @property
    def predict_text_sets(self) -> list[str]:
        """Text sets written by ``smec predict``: the corpus and every query split, in store order."""
        return [ts for ts in self.store.text_sets if ts == "corpus"] + [
            ts for ts in self.store.text_sets if ts != "corpus"
        ]

    def predict_dataloader(self) -> list[StreamLoader]:
        loaders = []
        for text_set in self.predict_text_sets:
            stream = BlockShuffleStream(
                [self._segment(text_set)], self.batch_size, shuffle=False, drop_last=False
            )
            loaders.append(self._loader(stream))
        return loaders

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Combine per-model rows into the float32 input on the batch's device."""

        def comb(parts: list[torch.Tensor]) -> torch.Tensor:
            return combine_torch(parts, self.normalization, self.model_weights)

        return {key: comb(parts) for key, parts in batch.items()}

    # -- evaluation side ----------------------------------------------------------------------------------
    def eval_data(self, split: str | None = None) -> EvalData:
        """Combined corpus and queries of a split, in memory, for the retrieval evaluator.

        Loaded once per split and kept: the store is read-only, and the evaluator callback asks every validation
        epoch (returning the same object also lets it reuse its evaluator).
        """
        split = split or self.val_split
        if split not in self._eval_data:
            self._eval_data[split] = self._load_eval_data(split)
        return self._eval_data[split]

    def _load_eval_data(self, split: str) -> EvalData:
        keys = self.model_keys

        def load(text_set: str) -> np.ndarray:
            return combine(
                [self.store.array(k, text_set).read() for k in keys], self.normalization, self.model_weights
            )

        return EvalData(
            queries=load(f"queries/{split}"),
            corpus=load("corpus"),
            query_ids=self.store.ids(f"queries/{split}"),
            corpus_ids=self.store.ids("corpus"),
            qrels=self.store.qrels(split),
            input_dim=self.input_dim,
        )

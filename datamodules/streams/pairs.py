"""`PairStream`: (query, relevant document) row pairs of a qrels split; `JointStream`: rows and pairs together
(``data.mode: both``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from datamodules import distributed
from datamodules.store.shards import ShardedArray
from datamodules.streams.batch_scope import rank_batch_size
from datamodules.streams.rows import BlockShuffleStream


class PairStream(IterableDataset):
    """(query, relevant document) row pairs from a qrels split, shuffled per epoch and dealt to ranks.

    Batches: ``{"q": [...], "d": [...]}`` (one tensor per model, (B, dim)); with ``negatives`` (a (n_queries, N)
    array of corpus rows per query row, ``-1`` where none was found, see :mod:`datamodules.negatives`) also
    ``"n"`` (per model (B, N, dim): each pair's query's mined negatives; a missing one is filled with the pair's
    positive) and ``"n_mask"`` ((B, N) bool, True for a real negative), so losses mask the fillers out.

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
        negatives: np.ndarray | None = None,
    ) -> None:
        if negatives is not None and (negatives.ndim != 2 or len(negatives) < len(queries[0])):
            raise ValueError(
                f"PairStream: negatives must be (n_queries >= {len(queries[0])}, N), got {negatives.shape}"
            )
        self.negatives = negatives
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
                    yield self._read(batch)
            if not self.cycle:
                return
            epoch += 1_000_003  # a fresh order for the next pass, disjoint from later epochs' seeds

    def _read(self, batch: np.ndarray) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        out: dict[str, list[torch.Tensor] | torch.Tensor] = {
            "q": [torch.from_numpy(a.take(batch[:, 0])) for a in self.queries],
            "d": [torch.from_numpy(a.take(batch[:, 1])) for a in self.corpus],
        }
        if self.negatives is not None:
            rows = self.negatives[batch[:, 0]]
            mask = rows >= 0
            filled = np.where(mask, rows, batch[:, 1:2])
            out["n"] = [
                torch.from_numpy(a.take(filled.reshape(-1)).reshape(*filled.shape, a.dim))
                for a in self.corpus
            ]
            out["n_mask"] = torch.from_numpy(mask)
        return out


class JointStream(IterableDataset):
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

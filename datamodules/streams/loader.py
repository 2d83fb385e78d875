"""`StreamLoader`: the DataLoader over an epoch-aware stream, resumable mid-epoch from a checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from datamodules.streams.read_ahead import read_ahead


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

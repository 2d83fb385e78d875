"""S-XBM's cross-batch memory: a FIFO queue of frozen teacher embeddings with top-K cosine retrieval.

XBM (Wang et al., CVPR 2020, arXiv 1912.06798) keeps a ring buffer of past embeddings so pair losses see more
pairs than one batch holds. SMEC's selectable variant (S-XBM, arXiv 2510.12474) stores the *frozen backbone*
embeddings h instead (they never drift, because the backbone never trains) and, for each query, uses only the K
most similar entries (hard neighbours) for a teacher–student similarity-alignment loss. This module is the
memory and the retrieval; :class:`smec.losses.sxbm.SXBM` combines it with the selection and the loss.

No ids are stored: the training batches carry none, and the one exclusion S-XBM needs (a row is not its own
neighbour) is made on the teacher cosine itself (:data:`smec.losses.sxbm.SELF_MATCH`), which also catches an
exact duplicate under another id.
"""

from __future__ import annotations

import torch
from torch import nn

from datamodules import distributed
from smec.errors import ConfigError
from smec.validation import integer

__all__ = ["CrossBatchMemory"]


class CrossBatchMemory(nn.Module):
    """FIFO ring buffer of `size` embeddings of width `dim`, kept in registered buffers.

    Everything that must survive a checkpoint is a buffer, so `state_dict()` / `load_state_dict()` restore the
    memory bit-for-bit (contents, write pointer, fill count) and a resumed fit continues exactly where it
    stopped, as MoCo's queue does:

    - `queue`  (size, dim), `dtype`: the stored embeddings (zeros where nothing was written yet);
    - `ptr`    () int64: the slot the next entry goes to;
    - `filled` () int64: how many slots hold data (grows to `size`, then stays).

    Slots fill from 0 upwards before the first wrap-around, so the valid entries are always slots `[0, filled)`.

    Distributed training: `enqueue(..., gather=True)` all-gathers the batch from every rank *before* writing, in
    rank order, so every rank holds the same memory and `topk` gives the same answer everywhere. It is a
    collective: every rank must call it at the same point. With `gather=False` each rank keeps its own memory; do
    not combine that with DDP's `broadcast_buffers=True` (the default), which would overwrite every rank's
    buffers with rank 0's at each forward. With `gather=True` that broadcast is harmless (the memories agree) but
    copies the whole memory every step, so configs/trainer/ddp.yaml turns it off; the gathered enqueue alone keeps
    the ranks' memories identical (tests/smec/test_ddp_fit.py checks it at the end of a 2-process fit).

    Args:
        size: capacity N_mem (number of entries). SMEC does not give it (docs/methods.md#s-xbm); XBM's default
            is 8192, and a few thousand to tens of thousands is typical.
        dim: embedding width (the teacher's D).
        dtype: storage dtype. float32 by default; float16/bfloat16 halve the memory at a small cost in
            similarity precision (similarities are always computed in at least float32).
    """

    queue: torch.Tensor
    ptr: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int, dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.size = integer("memory_size", size)
        self.dim = integer("dim", dim)
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point dtype, got {dtype}")
        self.register_buffer("queue", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, dtype={self.queue.dtype}"

    def __len__(self) -> int:
        return int(self.filled)

    def is_ready(self, min_filled: int | None = None) -> bool:
        """True once at least `min_filled` entries are stored (default: the memory is full).

        Use it for XBM-style warm-up: switch the memory loss on only when the memory holds enough entries,
        e.g. `memory.is_ready(k)` before calling `topk(..., k)`.
        """
        need = self.size if min_filled is None else min_filled
        return int(self.filled) >= need

    @torch.no_grad()
    def reset(self) -> None:
        """Empty the memory (contents zeroed, pointer and count back to 0)."""
        self.queue.zero_()
        self.ptr.zero_()
        self.filled.zero_()

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor, gather: bool = True) -> None:
        """Append a batch, overwriting the oldest entries once full.

        Args:
            x: (B, dim) embeddings; detached and cast to the memory's dtype and device. They are stored as given
                (not normalised), so the memory can also serve losses that need raw teacher vectors.
            gather: under `torch.distributed`, all-gather `x` from every rank first (rank 0's rows first), so all
                ranks store the same entries. Ranks may pass different B. A no-op when not distributed.

        The result equals enqueuing the (gathered) rows one at a time: writing wraps around when `ptr + B > size`,
        and when B > size only the newest `size` rows are kept.
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"enqueue expects x of shape (B, {self.dim}), got {tuple(x.shape)}")
        if gather and distributed.world_size() > 1:
            x = distributed.all_gather_tensor(x, uneven=True)
        n = x.shape[0]
        if n == 0:
            return
        keep = min(n, self.size)
        # Row j of the batch goes to slot (ptr + j) % size; rows older than the newest `size` would be overwritten
        # within this same call, so they are skipped.
        first = n - keep
        slots = (self.ptr + first + torch.arange(keep, device=self.queue.device)) % self.size
        self.queue[slots] = x[first:].detach().to(device=self.queue.device, dtype=self.queue.dtype)
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))

    def ordered(self) -> torch.Tensor:
        """The stored entries oldest first, (filled, dim). A view or a copy, no grad."""
        n = int(self.filled)
        if n < self.size:
            return self.queue[:n]
        p = int(self.ptr)
        order = torch.cat([torch.arange(p, self.size), torch.arange(0, p)]).to(self.queue.device)
        return self.queue[order]

    @torch.no_grad()
    def topk(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `k` stored entries most cosine-similar to each query.

        sim(q, m) = <q/‖q‖, m/‖m‖> over the filled slots only (an all-zero vector has similarity 0 to everything).
        The computation runs in float32 (float64 if the queries are float64) whatever the storage dtype.

        Args:
            queries: (B, dim) teacher embeddings of the current batch.
            k: neighbours per query; must satisfy 1 <= k <= len(self). Asking for more than is stored raises
                ValueError rather than silently returning fewer columns, so the loss's shape never changes
                mid-warm-up; guard calls with `is_ready(k)`.

        Returns:
            (similarities (B, k), indices (B, k)), similarities in descending order. Indices are slots of
            `queue` (use `queue[indices]` for the (B, k, dim) neighbours). No sampling is involved: the result is
            a deterministic function of the inputs on a given device (exact ties are broken in `torch.topk`'s
            order).
        """
        n = int(self.filled)
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"topk expects queries of shape (B, {self.dim}), got {tuple(queries.shape)}")
        if not 1 <= k <= n:
            raise ValueError(f"topk needs 1 <= k <= filled entries, got k={k} with {n} entries stored")
        compute = torch.promote_types(queries.dtype, torch.float32)
        q = nn.functional.normalize(queries.detach().to(compute), dim=1)
        mem = nn.functional.normalize(self.queue[:n].to(device=q.device, dtype=compute), dim=1)
        sims = q @ mem.T  # (B, n)
        return torch.topk(sims, k, dim=1, largest=True, sorted=True)

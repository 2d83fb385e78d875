"""Which rank am I, how many are there, and a gather: torch.distributed with single-process fallbacks.

Every function here is safe to call when `torch.distributed` is unavailable or no process group is initialised;
it then behaves as if the world had one rank. Components call these instead of Lightning so they stay
framework-free: they work the same inside a Lightning DDP fit, a hand-written `torch.distributed` script, or a
plain single-process run.

The data side (the streams' rank sharding) and the methods side (the S-XBM memory, `smec.rng`, the CPU
SyncBatchNorm) both ask here, so "which rank am I" has one answer; it lives in `datamodules` because
`datamodules` never imports `smec`.

The collective (`all_gather_tensor`) must be called by every rank, in the same order, or the job deadlocks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_tensor", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True when a `torch.distributed` process group is initialised (even with a world size of 1)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks in the default process group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the default process group; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def all_gather_tensor(t: torch.Tensor, *, uneven: bool = False) -> torch.Tensor:
    """Concatenate `t` from every rank along dim 0, in rank order (rank 0's rows first).

    Args:
        t: (N, ...) tensor on the device the process group's backend expects (CUDA for NCCL, CPU for gloo).
        uneven: the ranks' N may differ. The fast path (False) requires every rank to pass the same shape: NCCL
            and gloo silently misbehave or hang otherwise, so callers must either guarantee equal batch sizes
            (e.g. `DistributedSampler` pads every rank to the same number of samples, and `drop_last` removes a
            short final batch) or pass `uneven=True`. With `uneven=True` one extra collective exchanges the sizes,
            every rank pads to the largest N, and the padding is cut out of the result. Trailing dimensions must
            match on every rank in both modes.

    Returns:
        (sum of N over ranks, ...) tensor, detached (no gradient flows through the gather: it is meant for
        memories and statistics, not for losses that need cross-rank gradients). When not distributed, or with
        a world size of 1, returns `t.detach()` itself (no copy).
    """
    t = t.detach()
    n_ranks = world_size()
    if n_ranks == 1:
        return t
    t = t.contiguous()
    if not uneven:
        parts = [torch.empty_like(t) for _ in range(n_ranks)]
        dist.all_gather(parts, t)
        return torch.cat(parts, dim=0)

    local_n = torch.tensor([t.shape[0]], dtype=torch.int64, device=t.device)
    sizes = [torch.empty_like(local_n) for _ in range(n_ranks)]
    dist.all_gather(sizes, local_n)
    counts = [int(s.item()) for s in sizes]
    max_n = max(counts)
    padded = t
    if t.shape[0] < max_n:
        padded = torch.cat([t, t.new_zeros((max_n - t.shape[0], *t.shape[1:]))], dim=0)
    parts = [torch.empty_like(padded) for _ in range(n_ranks)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts)], dim=0)

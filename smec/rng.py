"""The global random states a fit draws from, captured into a checkpoint and restored from it.

A fit draws from torch's CPU generator (ADS's Gumbel noise; DataLoader's per-epoch base seed, which
:class:`datamodules.streams.loader.StreamLoader` draws too), CUDA's generators on a GPU, and possibly numpy's and
Python's global generators (user code, libraries). A resumed fit is bit-identical to an uninterrupted one only
if every one of them continues from where the checkpoint was written, so :class:`smec.systems.base.
CompressionSystem` stores :func:`gather` in every checkpoint and :func:`restore` s it when a fit resumes.

States are stored as tensors, ints, floats and tuples only, so a checkpoint holding them loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from datamodules import distributed

__all__ = ["capture", "gather", "restore", "select"]


def capture() -> dict[str, Any]:
    """This process's generator states: ``torch`` (CPU), ``cuda`` (one per device, only once CUDA is in use),
    ``numpy`` (the legacy global ``np.random`` state) and ``python`` (``random``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    # Never initialise CUDA here: a CPU fit on a GPU machine must not grab a device.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore(state: dict[str, Any]) -> None:
    """Set every generator captured in ``state`` (keys :func:`capture` did not write are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        s = state["numpy"]
        keys = s["keys"].numpy().astype(np.uint32)
        np.random.set_state((s["name"], keys, int(s["pos"]), int(s["has_gauss"]), float(s["gauss"])))
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if state.get("cuda") and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs restores the devices both have.
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def gather() -> list[dict[str, Any]]:
    """Every rank's :func:`capture`, in rank order: a collective under DDP, ``[capture()]`` otherwise.

    Ranks seeded alike draw alike, but nothing guarantees it (a per-rank seed, rank-dependent work), so each
    rank's own state is kept.
    """
    mine = capture()
    world = distributed.world_size()
    if world == 1:
        return [mine]
    states: list[Any] = [None] * world
    torch.distributed.all_gather_object(states, mine)
    return states


def select(states: list[dict[str, Any]]) -> dict[str, Any]:
    """This rank's entry of :func:`gather`'s list (rank 0's when the checkpoint came from fewer ranks)."""
    rank = distributed.rank()
    return states[rank] if rank < len(states) else states[0]

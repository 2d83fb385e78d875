"""The concatenation recipe: each model's rows L2-normalised, optionally weighted, concatenated, renormalised.

:func:`combine` (numpy, float32) feeds the evaluator and :class:`ConcatView`; :func:`combine_torch` is its twin
on any torch device, used on training batches after they reach the accelerator and by `smec export`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from datamodules.errors import StoreError

if TYPE_CHECKING:
    import torch

    from datamodules.store.shards import ShardedArray


NORMALIZATIONS = ("l2-concat-l2", "l2-concat", "none")


def combine(
    blocks: Sequence[np.ndarray],
    normalization: str = "l2-concat-l2",
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Concatenate per-model rows into float32 vectors.

    ``l2-concat-l2`` (default, the concat-decoder paper's recipe, docs/methods.md#concat-decoder-mrl): each
    model's rows are L2-normalised, optionally scaled by a per-model weight, concatenated, and the result is
    L2-normalised again. ``l2-concat`` skips the final renormalisation; ``none`` concatenates the raw rows.
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


def combine_torch(
    blocks: Sequence[torch.Tensor],
    normalization: str = "l2-concat-l2",
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Torch twin of :func:`combine` (same maths, runs on any device, returns float32)."""
    import torch  # here, not at module level: the CLI imports the store at start-up, torch is slow to import

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

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
COMBINE_CHUNK_ROWS = 65_536


def combine(
    blocks: Sequence[np.ndarray],
    normalization: str = "l2-concat-l2",
    weights: Sequence[float] | None = None,
    chunk_rows: int = COMBINE_CHUNK_ROWS,
) -> np.ndarray:
    """Concatenate per-model rows into float32 vectors.

    ``l2-concat-l2`` (default, the concat-decoder paper's recipe, docs/methods.md#concat-decoder-mrl): each
    model's rows are L2-normalised, optionally scaled by a per-model weight, concatenated, and the result is
    L2-normalised again. ``l2-concat`` skips the final renormalisation; ``none`` concatenates the raw rows.

    Rows are combined ``chunk_rows`` at a time into the one float32 output, so the only allocation the size of
    the input is the output itself (a 1M-document concatenation of three fp16 models: 4.6 GB, not the ~14 GB
    that whole-matrix temporaries would take). Every step is per row: chunking changes no bit of the result.
    """
    if normalization not in NORMALIZATIONS:
        raise StoreError(
            f"normalization {normalization!r} is unknown; expected one of {', '.join(NORMALIZATIONS)}"
        )
    rows = len(blocks[0])
    widths = [int(np.shape(b)[1]) for b in blocks]
    out = np.empty((rows, sum(widths)), dtype=np.float32)
    for lo in range(0, rows, chunk_rows):
        hi = min(rows, lo + chunk_rows)
        col = 0
        for i, (b, width) in enumerate(zip(blocks, widths)):
            part = np.asarray(b[lo:hi], dtype=np.float32)
            if normalization != "none":
                part = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
            if weights is not None:
                part = part * np.float32(weights[i])
            out[lo:hi, col : col + width] = part
            col += width
        if normalization == "l2-concat-l2":
            seg = out[lo:hi]
            seg /= np.maximum(np.linalg.norm(seg, axis=1, keepdims=True), 1e-12)
    return out


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

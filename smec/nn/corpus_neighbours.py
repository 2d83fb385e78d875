"""Each row's k most similar corpus rows under the frozen input: Matryoshka-Adaptor's top-k neighbours (arXiv
2407.20243, Eq. 4) taken from the corpus instead of the batch (docs/methods.md#matryoshka-adaptor-where-the-paper-is-silent).

The corpus is the store's frozen (combined, L2-normalised) corpus rows, handed over once at fit start; no ids
travel with the training batches, so every batch row is searched against the whole corpus (exact cosine, in
chunks of corpus rows) and the row itself is recognised by its teacher cosine (>= ``self_match``, as S-XBM
does, which also drops an exact duplicate under another id). The search is a pure function of the batch and the
corpus: no state to checkpoint, no randomness.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from smec.validation import integer

__all__ = ["CHUNK_ROWS", "CorpusNeighbours", "NeighbourPick"]

# Corpus rows scored per matmul: bounds the (B, chunk) score block whatever the corpus size.
CHUNK_ROWS = 65536


class NeighbourPick(NamedTuple):
    """The corpus neighbours of one batch.

    teacher: (B, k) frozen cosines cos(x_i, c_j), 0 where masked; keep: (B, k) bool, False for a slot with no
    non-self neighbour left (a corpus with fewer than k other rows, or many duplicates); slots: (U,) the distinct
    corpus rows picked by the batch, ascending; inverse: (B, k) positions of each row's neighbours in ``slots``.
    """

    teacher: Tensor
    keep: Tensor
    slots: Tensor
    inverse: Tensor


class CorpusNeighbours:
    """The frozen corpus and exact top-k cosine search over it, self-matches excluded.

    Args:
        corpus: (N, D) frozen corpus rows (any norm; cosines are computed on their L2-normalised copies).
        self_match: teacher cosines at or above this count as the row itself (default 1 − 1e-6, S-XBM's).
        chunk_rows: corpus rows per score block (default :data:`CHUNK_ROWS`).
    """

    def __init__(
        self, corpus: Tensor | np.ndarray, self_match: float = 1.0 - 1e-6, chunk_rows: int = CHUNK_ROWS
    ) -> None:
        rows = torch.as_tensor(corpus)
        if rows.ndim != 2 or len(rows) == 0:
            raise ValueError(f"corpus must be a non-empty (N, D) matrix, got shape {tuple(rows.shape)}")
        self.rows = rows.float()
        self._unit = F.normalize(self.rows, dim=1)
        self.self_match = float(self_match)
        self.chunk_rows = integer("chunk_rows", chunk_rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return self.rows.shape[1]

    def to(self, device: torch.device) -> CorpusNeighbours:
        """Move the corpus to ``device`` (in place; a no-op where it already is)."""
        if self.rows.device != torch.device(device):
            self.rows, self._unit = self.rows.to(device), self._unit.to(device)
        return self

    def gather(self, slots: Tensor) -> Tensor:
        """The frozen corpus rows ``slots`` (U, D), as stored."""
        return self.rows[slots.to(self.rows.device)]

    @torch.no_grad()
    def select(self, x: Tensor, k: int) -> NeighbourPick:
        """Each row's ``k`` most cosine-similar corpus rows other than itself, most similar first.

        k + 1 candidates are searched (the row itself, when it is a corpus row, is one of them); self-matches are
        moved behind the others (a stable reorder, so the rest keep their rank order) and the first k kept.
        Exact ties are broken in ``torch.topk``'s order: deterministic on a given device.
        """
        integer("k", k, maximum=len(self))
        q = F.normalize(x.detach().float().to(self._unit.device), dim=1)
        want = min(k + 1, len(self))
        best_s, best_i = None, None
        for start in range(0, len(self), self.chunk_rows):
            block = self._unit[start : start + self.chunk_rows]
            s, i = (q @ block.T).topk(min(want, len(block)), dim=1)
            if best_s is not None:
                s, i = torch.cat([best_s, s], dim=1), torch.cat([best_i, i + start], dim=1)
                s, order = s.topk(want, dim=1)
                i = i.gather(1, order)
            best_s, best_i = s, i
        is_self = best_s >= self.self_match
        order = is_self.to(torch.int8).argsort(dim=1, stable=True)[:, :k]
        teacher, index = best_s.gather(1, order), best_i.gather(1, order)
        keep = ~is_self.gather(1, order)
        slots, inverse = index.unique(return_inverse=True)
        return NeighbourPick(teacher.masked_fill(~keep, 0.0).to(x.device), keep.to(x.device), slots, inverse)

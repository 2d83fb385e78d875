"""S-XBM, SMEC's selectable cross-batch memory (arXiv 2510.12474): the memory, the neighbour selection and the
alignment term in one module.

XBM (arXiv 1912.06798) gives a pair loss more pairs than one batch holds by keeping past embeddings in a FIFO
memory. S-XBM keeps the *frozen teacher* rows instead (they never drift), selects for each batch row its K most
cosine-similar memory entries in the teacher space, and aligns the student's cosines with the teacher's on those
pairs (:class:`~smec.losses.alignment.SimilarityAlignmentLoss`). Our formalisation and its choices are in
docs/methods.md#s-xbm. One step:

1. ``pick = sxbm.select(x)`` — teacher cosines of each row's K neighbours, with its own row masked out;
2. ``sxbm.memory_side(pick, encode, dtype)`` — the selected entries through the current compressor, once per
   distinct entry and without gradient (XBM treats memory features as constants: gradient reaches the
   compressor through the batch side, and skipping the backward through up to N_mem rows is most of S-XBM's
   cost at a D×D first stage);
3. ``sxbm(student_rows, student_memory, pick)`` — the alignment term at one size;
4. ``sxbm.enqueue(x)`` after the loss, so a batch is never its own neighbour (a collective under DDP).

:meth:`SXBM.term` does 1–2 and hands back 3 for each size.

Self-matches. Batches carry no row ids, so an item's own row (or an exact duplicate of it) in the memory is
detected as teacher cosine >= :data:`SELF_MATCH` and masked out: identical inputs have identical outputs, such a
pair carries no signal and would only dilute the mean. The cosine test needs no ids from the data and also
catches duplicates stored under other ids, which an id test would miss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smec.losses.alignment import SimilarityAlignmentLoss, pair_cosines
from smec.nn.memory import CrossBatchMemory
from smec.validation import integer

__all__ = ["SELF_MATCH", "SXBM", "Neighbours", "SXBMSettings"]

T = TypeVar("T")

SELF_MATCH = 1.0 - 1e-6
"""Teacher cosine at or above which a memory entry counts as the row itself (masked out of the term)."""


@dataclass(frozen=True)
class SXBMSettings:
    """SMEC's S-XBM settings, ``model.init_args.sxbm`` (SMEC gives none of the values: docs/methods.md#s-xbm).

    Args:
        enabled: use the memory term (default True); False is the ``no-sxbm`` ablation
            (configs/ablations/no-sxbm.yaml). A ``weight`` of 0 switches it off too.
        memory_size: N_mem, the FIFO capacity (default 4096).
        k: K, neighbours per row (default 16), at most ``memory_size``.
        weight: λ of the term in the stage objective (default 1.0).
        distance: the alignment distance, ``l2`` (default; squared error on cosines), ``l1`` or ``smooth_l1``.
        warmup_steps: optimizer steps before the term switches on (default 0; it also waits for the memory to
            hold >= k entries). XBM's warm-up exists because stored features drift; here they are frozen
            teacher rows and the student side is recomputed every step, so no warm-up is needed by default.
    """

    enabled: bool = True
    memory_size: int = 4096
    k: int = 16
    weight: float = 1.0
    distance: str = "l2"
    warmup_steps: int = 0


class Neighbours(NamedTuple):
    """The memory entries selected for one batch (see :meth:`SXBM.select`).

    teacher: (B, K) teacher cosines cos(x_i, m_j), 0 where masked; keep: (B, K) bool, False for self-matches;
    slots: (U,) the distinct memory slots selected by the batch; inverse: (B, K) positions of each row's
    neighbours in ``slots``.
    """

    teacher: Tensor
    keep: Tensor
    slots: Tensor
    inverse: Tensor


class SXBM(nn.Module):
    """S-XBM: a FIFO memory of frozen teacher rows, top-K neighbour selection and the alignment term.

    Args:
        dim: width D of the teacher rows.
        memory_size, k, distance, warmup_steps: see :class:`SXBMSettings` (the weight is the objective's).

    State: the memory's registered buffers (``memory.queue``, ``memory.ptr``, ``memory.filled``), so the memory
    lands in checkpoints and a resumed fit continues with exactly the memory it stopped with.
    """

    def __init__(
        self, dim: int, memory_size: int = 4096, k: int = 16, distance: str = "l2", warmup_steps: int = 0
    ) -> None:
        super().__init__()
        self.memory = CrossBatchMemory(memory_size, dim)
        self.k = integer("k", k, 1, memory_size, bound=f"memory_size={memory_size}")
        self.warmup_steps = integer("warmup_steps", warmup_steps, minimum=0)
        self.align = SimilarityAlignmentLoss(distance)

    @classmethod
    def from_settings(cls, dim: int, settings: SXBMSettings) -> SXBM:
        return cls(dim, settings.memory_size, settings.k, settings.distance, settings.warmup_steps)

    def __len__(self) -> int:
        return len(self.memory)

    def active(self, global_step: int) -> bool:
        """Whether the term is on at this optimizer step: past the warm-up, with >= k entries stored."""
        return len(self.memory) >= self.k and global_step >= self.warmup_steps

    @torch.no_grad()
    def select(self, x: Tensor) -> Neighbours:
        """Each row's K most cosine-similar memory entries in the teacher space, self-matches masked out."""
        teacher, slots = self.memory.topk(x, self.k)
        keep = torch.isfinite(teacher) & (teacher < SELF_MATCH)
        teacher = teacher.masked_fill(~torch.isfinite(teacher), 0.0)
        unique, inverse = slots.unique(return_inverse=True)
        return Neighbours(teacher, keep, unique, inverse)

    def memory_side(self, pick: Neighbours, encode: Callable[[Tensor], T], dtype: torch.dtype) -> T:
        """``encode`` (the current compressor) of the selected entries, once per distinct entry, no gradient."""
        with torch.no_grad():
            return encode(self.memory.queue[pick.slots].to(dtype))

    def term(
        self, rows: Tensor, global_step: int, encode: Callable[[Tensor], Sequence[Tensor]]
    ) -> Callable[[int, Tensor], Tensor] | None:
        """This step's term, ``(i, student rows at size i) -> Tensor``, or None while it is off.

        ``encode`` maps teacher rows to the student representations the step trains (one tensor per size, in
        the order the student rows come); the selection and the memory side are computed here, once per step.
        """
        if not self.active(global_step):
            return None
        pick = self.select(rows)
        memory = self.memory_side(pick, encode, rows.dtype)
        return lambda i, student: self(student, memory[i], pick)

    def forward(self, student: Tensor, student_memory: Tensor, pick: Neighbours) -> Tensor:
        """The alignment term at one size: student (B, d) rows, student_memory (U, d) encoded ``pick.slots``."""
        # Normalise the U distinct memory rows before pair_cosines gathers them to (B, K, d).
        em = F.normalize(student_memory, dim=-1)
        cosines = pair_cosines(F.normalize(student, dim=-1), em, pick.inverse, normalize=False)
        return self.align(cosines, pick.teacher, pick.keep)

    def enqueue(self, x: Tensor) -> None:
        """Store the batch's teacher rows (after the loss). All-gathers across ranks: every rank must call it."""
        self.memory.enqueue(x)

"""S-XBM, SMEC's selectable cross-batch memory (arXiv 2510.12474): the memory, the neighbour selection and the
alignment term in one module.

XBM (arXiv 1912.06798) gives a pair loss more pairs than one batch holds by keeping past embeddings in a FIFO
memory. S-XBM keeps the *frozen teacher* rows instead (they never drift), selects for each batch row its K most
cosine-similar memory entries in the teacher space, and aligns the student's cosines with the teacher's on those
pairs (:class:`~smec.losses.alignment.SimilarityAlignmentLoss`). Our formalisation and its choices are in
docs/methods.md#s-xbm. One step:

1. ``pick = sxbm.select(x)`` — teacher cosines of each row's K neighbours, with its own row masked out;
2. ``sxbm.memory_side(pick, encode, dtype)`` — the selected entries through the current compressor, once per
   distinct entry, by default without gradient (XBM treats memory features as constants: gradient reaches the
   compressor through the batch side, and skipping the backward through up to N_mem rows is most of S-XBM's
   cost at a D×D first stage); ``memory_grad: true`` lets the gradient through the memory side too;
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

from smec.errors import ConfigError
from smec.losses.alignment import SimilarityAlignmentLoss, pair_cosines
from smec.nn.memory import CrossBatchMemory
from smec.validation import integer, nonnegative

__all__ = ["SELF_MATCH", "SXBM", "Neighbours", "SXBMSettings", "per_stage"]

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
        k: K, neighbours per row (default 16), at most ``memory_size``; an int, or a list with one per stage.
        weight: λ of the term in the stage objective (default 1.0); a number, or a list with one per stage.
            Joint training (``smrl.enabled: false``) weighs each stage's sizes with that stage's λ and K.
        distance: the alignment distance, ``l2`` (default; squared error on cosines), ``l1`` or ``smooth_l1``.
        warmup_steps: optimizer steps before the term switches on (default 0; it also waits for the memory to
            hold >= k entries). XBM's warm-up exists because stored features drift; here they are frozen
            teacher rows and the student side is recomputed every step, so no warm-up is needed by default.
        memory_grad: let the gradient through the memory side (the selected entries pass through the trainable
            stage with gradient), default False: XBM's constants, and the paper is silent
            (docs/methods.md#smec-where-the-paper-is-silent).
    """

    enabled: bool = True
    memory_size: int = 4096
    k: int | list[int] = 16
    weight: float | list[float] = 1.0
    distance: str = "l2"
    warmup_steps: int = 0
    memory_grad: bool = False


def per_stage(name: str, value: T | Sequence[T], num_stages: int) -> list[T]:
    """``value`` for each of ``num_stages`` stages: a list of that length as given, a single value repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            raise ConfigError(
                f"{name} has {len(value)} entries but there are {num_stages} stages (give one per stage, or one)"
            )
        return list(value)
    return [value] * num_stages  # type: ignore[list-item]


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
        memory_size, k, distance, warmup_steps, weight, memory_grad: see :class:`SXBMSettings`; ``k`` and
            ``weight`` per stage (a list of ``num_stages``) or one for all. The term :meth:`term` hands back is
            weighted by its stage's λ (the objective adds it with weight 1).
        num_stages: stages of the chain (default 1).

    State: the memory's registered buffers (``memory.queue``, ``memory.ptr``, ``memory.filled``), so the memory
    lands in checkpoints and a resumed fit continues with exactly the memory it stopped with.
    """

    def __init__(
        self,
        dim: int,
        memory_size: int = 4096,
        k: int | Sequence[int] = 16,
        distance: str = "l2",
        warmup_steps: int = 0,
        weight: float | Sequence[float] = 1.0,
        memory_grad: bool = False,
        num_stages: int = 1,
    ) -> None:
        super().__init__()
        self.memory = CrossBatchMemory(memory_size, dim)
        bound = f"memory_size={memory_size}"
        self.ks = [integer("k", v, 1, memory_size, bound=bound) for v in per_stage("k", k, num_stages)]
        self.weights = [nonnegative("weight", v) for v in per_stage("weight", weight, num_stages)]
        self.k = max(self.ks)
        self.warmup_steps = integer("warmup_steps", warmup_steps, minimum=0)
        self.memory_grad = bool(memory_grad)
        self.align = SimilarityAlignmentLoss(distance)

    @classmethod
    def from_settings(cls, dim: int, settings: SXBMSettings, num_stages: int = 1) -> SXBM | None:
        """The S-XBM of ``settings`` for a chain of ``num_stages`` stages; None when off (disabled, or λ = 0)."""
        if not settings.enabled:
            return None
        kw = {f: getattr(settings, f) for f in ("memory_size", "k", "distance", "warmup_steps", "weight")}
        sxbm = cls(dim, **kw, memory_grad=settings.memory_grad, num_stages=num_stages)
        return sxbm if any(sxbm.weights) else None

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
        """``encode`` (the current compressor) of the selected entries, once per distinct entry; with gradient
        only when ``memory_grad``."""
        with torch.set_grad_enabled(self.memory_grad and torch.is_grad_enabled()):
            return encode(self.memory.queue[pick.slots].to(dtype))

    def term(
        self,
        rows: Tensor,
        global_step: int,
        encode: Callable[[Tensor], Sequence[Tensor]],
        stages: Sequence[int] | None = None,
    ) -> Callable[[int, Tensor], Tensor] | None:
        """This step's λ-weighted term, ``(i, student rows at size i) -> Tensor``, or None while it is off.

        ``encode`` maps teacher rows to the student representations the step trains (one tensor per size, in
        the order the student rows come); ``stages[i]`` is the stage whose λ and K size i uses (default: stage 0
        for every size). The selection (the largest K the step needs; a stage with a smaller K uses the first K
        of each row's neighbours, they are sorted) and the memory side are computed here, once per step.
        """
        if not self.active(global_step):
            return None
        pick = self.select(rows)
        memory = self.memory_side(pick, encode, rows.dtype)

        def weighted(i: int, student: Tensor) -> Tensor:
            s = 0 if stages is None else stages[i]
            k = self.ks[s]
            top = pick._replace(
                teacher=pick.teacher[:, :k], keep=pick.keep[:, :k], inverse=pick.inverse[:, :k]
            )
            return self.weights[s] * self(student, memory[i], top)

        return weighted

    def forward(self, student: Tensor, student_memory: Tensor, pick: Neighbours) -> Tensor:
        """The alignment term at one size: student (B, d) rows, student_memory (U, d) encoded ``pick.slots``."""
        # Normalise the U distinct memory rows before pair_cosines gathers them to (B, K, d).
        em = F.normalize(student_memory, dim=-1)
        cosines = pair_cosines(F.normalize(student, dim=-1), em, pick.inverse, normalize=False)
        return self.align(cosines, pick.teacher, pick.keep)

    def enqueue(self, x: Tensor) -> None:
        """Store the batch's teacher rows (after the loss). All-gathers across ranks: every rank must call it."""
        self.memory.enqueue(x)

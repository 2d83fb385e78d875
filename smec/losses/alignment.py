"""Teacher–student similarity alignment on selected pairs: the loss of SMEC's selectable cross-batch memory
(S-XBM, arXiv 2510.12474; the formalisation is ours, docs/methods.md#s-xbm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smec.validation import one_of, positive

__all__ = ["ALIGNMENT_DISTANCES", "SimilarityAlignmentLoss", "pair_cosines"]

ALIGNMENT_DISTANCES = ("l2", "l1", "smooth_l1")


def pair_cosines(z: Tensor, memory: Tensor, indices: Tensor | None = None, normalize: bool = True) -> Tensor:
    """Cosines between each batch item and its selected memory entries.

    Serves both sides of S-XBM: the student cosines (z = compressed batch, memory = memory entries passed through
    the current compression layer) and, with the frozen embeddings, the teacher cosines.

    Args:
        z: batch embeddings (B, d).
        memory: either the already-gathered entries per item (B, K, d), or the whole memory (M, d) together with
            `indices`.
        indices: (B, K) integer rows of `memory` selected for each item; only with a 2-D `memory`.
        normalize: L2-normalise z and the memory entries first (default True). Pass False for unit-norm inputs.

    Returns:
        (B, K) tensor, entry [i, k] = cos(z_i, memory entry k of item i). Differentiable in z and memory.
    """
    if memory.ndim == 2:
        if indices is None or indices.ndim != 2 or indices.shape[0] != z.shape[0]:
            raise ValueError(
                f"a 2-D memory (M, d) needs indices of shape (B, K) with B={z.shape[0]}, "
                f"got {None if indices is None else tuple(indices.shape)}"
            )
        # Gather before the dot product: B·K·d work instead of B·M·d, since K << M.
        memory = memory[indices]
    elif indices is not None:
        raise ValueError(f"indices are only used with a 2-D memory (M, d), got memory {tuple(memory.shape)}")
    if z.ndim != 2 or memory.ndim != 3 or memory.shape[0] != z.shape[0] or memory.shape[2] != z.shape[1]:
        raise ValueError(
            f"expected z (B, d) and memory (B, K, d), got {tuple(z.shape)} and {tuple(memory.shape)}"
        )
    if normalize:
        z, memory = F.normalize(z, dim=-1), F.normalize(memory, dim=-1)
    return torch.einsum("bd,bkd->bk", z, memory)


class SimilarityAlignmentLoss(nn.Module):
    r"""Align the student's similarities to the teacher's on selected (hard) pairs — S-XBM's loss.

    Our formalisation of SMEC's S-XBM (arXiv 2510.12474; the paper's exact form is not published, see
    docs/methods.md#s-xbm): a FIFO memory holds frozen-backbone embeddings h_j; for each batch item h_i the K
    most similar memory entries TopK_mem(i) are selected in the teacher space, and with f the current
    compression (at the active size)

    .. math::

        L_{SXBM} = \frac{1}{B K} \sum_i \sum_{j \in TopK_{mem}(i)} \ell\big(\cos(f(h_i), f(h_j)) - \cos(h_i, h_j)\big)

    Teacher cosines t_ik = cos(h_i, h_j) come from the frozen input space and are detached; student cosines
    s_ik = cos(f(h_i), f(h_j)) are computed by passing the stored h_j through the current f (`pair_cosines`),
    so gradients can flow through both the batch and the memory side (:class:`~smec.losses.sxbm.SXBM` passes
    the memory side without gradient, as XBM treats memory features as constants).

    Args:
        distance: ℓ, ``"l2"`` (default; squared error) | ``"l1"`` | ``"smooth_l1"`` (Huber-like with `beta`).
        beta: transition point of smooth-L1 (default 0.1; cosine errors are mostly below 0.5, so torch's default
            of 1.0 would make it almost pure L2/2).

    Shapes:
        forward(student (B, K), teacher (B, K), mask=None) → scalar. ``mask``: optional (B, K) bool, True for
        pairs to keep (e.g. to drop empty memory slots or an item's own entry); the mean then runs over the kept
        pairs, and is 0 when none are kept.
    """

    def __init__(self, distance: str = "l2", beta: float = 0.1) -> None:
        super().__init__()
        self.distance = one_of("distance", distance, ALIGNMENT_DISTANCES)
        self.beta = positive("beta", beta)

    def forward(self, student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
        if student.shape != teacher.shape or student.ndim != 2:
            raise ValueError(
                f"student and teacher must both be (B, K), got {tuple(student.shape)} and {tuple(teacher.shape)}"
            )
        teacher = teacher.detach()
        if self.distance == "l2":
            errors = (student - teacher).square()
        elif self.distance == "l1":
            errors = (student - teacher).abs()
        else:
            errors = F.smooth_l1_loss(student, teacher, reduction="none", beta=self.beta)
        if mask is None:
            return errors.mean()
        if mask.shape != errors.shape or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(errors.shape)}, got {mask.dtype} {tuple(mask.shape)}"
            )
        return (errors * mask).sum() / mask.sum().clamp_min(1)

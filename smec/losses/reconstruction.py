"""The adaptors' reconstruction regulariser (Matryoshka-Adaptor, arXiv 2407.20243, Eq. 4; Search-Adaptor, arXiv
2310.08750): how far the adapted embedding moved from the frozen one."""

from __future__ import annotations

from torch import Tensor

__all__ = ["reconstruction_loss"]


def reconstruction_loss(y: Tensor, target: Tensor) -> Tensor:
    """L_rec = mean |y − target| over the batch and the coordinates; the target is detached (a frozen input).

    For a residual adaptor ĉ = c + g(c) with ``target = c`` this is mean |g(c)|, 0 at the identity init. The
    papers sum |·|; a mean keeps the weight β's meaning whatever the batch size and width are.

    Shapes: y (..., d) and target (..., d) → scalar.
    """
    return (y - target.detach()).abs().mean()

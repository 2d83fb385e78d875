"""CSR's objective (Wen et al., ICML 2025, arXiv 2503.01776; docs/methods.md#csr): reconstruction at k and 4k,
the dead-latent auxiliary term, and a non-negative contrastive term on the sparse codes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smec.losses.matryoshka import LossOutput
from smec.nn.sparse_autoencoder import SparseAutoEncoderOutput
from smec.validation import check_dims, check_weights, nonnegative, positive

__all__ = ["CSRLoss", "normalized_mse", "sparse_contrastive"]


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """MSE(prediction, target) / MSE(mean_batch(target), target): the error relative to the target's batch
    variance (1 when the batch's target does not vary, so the term is then a plain MSE)."""
    variance = (target - target.mean(dim=0, keepdim=True)).square().mean()
    return F.mse_loss(prediction, target) / torch.where(variance > 0, variance, torch.ones_like(variance))


def sparse_contrastive(z_q: Tensor, z_d: Tensor, scale: float = 1.0) -> Tensor:
    """In-batch InfoNCE on raw sparse codes: −mean_i log softmax_j(scale · z_q,i · z_d,j)[i]. (B, H), (B, H) → ()."""
    logits = scale * z_q @ z_d.T
    return F.cross_entropy(logits, torch.arange(len(z_q), device=z_q.device))


class CSRLoss(nn.Module):
    r"""CSR's loss over one or several sparsity levels k of one sparse autoencoder.

    For a batch of frozen inputs x (B, D), the autoencoder's reconstructions x̂_k, x̂_4k (B, D) and, in supervised
    batches, the k-sparse codes z_k(q), z_k(d) (B, H) of (query, relevant document) pairs:

    .. math::

        L = \sum_{k \in K} w_k \big[\underbrace{\mathrm{MSE}(x̂_k, x) + \tfrac18 \mathrm{MSE}(x̂_{4k}, x)}_{L_{rec,k}}
            + γ\, L_{cl,k}\big] + β\, \mathrm{NMSE}(W_{dec}^\top z_{aux},\; x − x̂_{k_{max}})

    with L_cl,k = −mean_i log softmax_j(s · z_k(q_i)·z_k(d_j))_i (in-batch negatives, raw non-negative codes,
    dot product: sentence-transformers' ``SparseMultipleNegativesRankingLoss``, scale s = 1) and NMSE the MSE
    over the target's batch variance (:func:`normalized_mse`). The 1/8 on L_4k and the NMSE are the
    sentence-transformers port of the authors' code; β defaults to 1/32, the auxiliary weight of the top-k
    autoencoder recipe CSR builds on (sentence-transformers' ``CSRLoss`` defaults to 0.1); γ = 1 (both).
    Several k in one loss is this repository's choice (docs/methods.md#csr): the paper trains one k.

    Args:
        ks: sparsity levels K, ascending, unique, positive.
        weights: w_k, one positive number per k (default: all 1).
        aux_weight: β (default 1/32); 0 drops the auxiliary term.
        contrastive_weight: γ (default 1.0); 0 drops the contrastive term (then no pairs are needed).
        four_k_weight: the weight of L_4k inside L_rec (default 1/8).
        scale: s, the contrastive logits' scale (default 1.0).

    Shapes:
        forward(x (B, D), out: :class:`~smec.nn.sparse_autoencoder.SparseAutoEncoderOutput` at ``ks``,
        pairs: k → (z_q (P, H), z_d (P, H)) or None) → `LossOutput` with ``per_dim[k]`` = L_rec,k + γ L_cl,k
        (before w_k) and ``terms`` ``"reconstruction"``, ``"reconstruction_4k"``, ``"aux"``, ``"contrastive"``
        (the enabled ones, weighted as in L).
    """

    def __init__(
        self,
        ks: Sequence[int],
        weights: Sequence[float] | None = None,
        aux_weight: float = 1 / 32,
        contrastive_weight: float = 1.0,
        four_k_weight: float = 1 / 8,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.ks = check_dims(ks, name="ks")
        self.weights = check_weights(weights, len(self.ks))
        self.aux_weight = nonnegative("aux_weight", aux_weight)
        self.contrastive_weight = nonnegative("contrastive_weight", contrastive_weight)
        self.four_k_weight = nonnegative("four_k_weight", four_k_weight)
        self.scale = positive("scale", scale)

    def forward(
        self,
        x: Tensor,
        out: SparseAutoEncoderOutput,
        pairs: dict[int, tuple[Tensor, Tensor]] | None = None,
    ) -> LossOutput:
        missing = [k for k in self.ks if k not in out.reconstructions]
        if missing:
            raise ValueError(
                f"the autoencoder output has no reconstruction at k={missing} (loss ks {self.ks})"
            )
        if self.contrastive_weight > 0 and pairs is None:
            raise ValueError("contrastive_weight > 0 needs (query, document) code pairs")
        x = x.detach()
        zero = x.new_zeros(())
        loss, rec_total, rec4_total, cl_total = zero, zero, zero, zero
        per_dim: dict[int, Tensor] = {}
        for k, w in zip(self.ks, self.weights):
            rec = F.mse_loss(out.reconstructions[k], x)
            rec4 = self.four_k_weight * F.mse_loss(out.reconstructions_4k[k], x)
            term = rec + rec4
            rec_total, rec4_total = rec_total + w * rec.detach(), rec4_total + w * rec4.detach()
            if self.contrastive_weight > 0:
                cl = self.contrastive_weight * sparse_contrastive(*pairs[k], scale=self.scale)
                cl_total = cl_total + w * cl.detach()
                term = term + cl
            per_dim[k] = term.detach()
            loss = loss + w * term
        terms = {"reconstruction": rec_total, "reconstruction_4k": rec4_total}
        if self.contrastive_weight > 0:
            terms["contrastive"] = cl_total
        if self.aux_weight > 0 and out.aux_reconstruction is not None:
            aux = self.aux_weight * normalized_mse(out.aux_reconstruction, out.aux_target)
            terms["aux"] = aux.detach()
            loss = loss + aux
        return LossOutput(loss=loss, per_dim=per_dim, terms=terms)

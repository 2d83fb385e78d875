"""Supervised query–document losses over in-batch negatives: the adaptors' pairwise rank loss and InfoNCE.

Both take a batch of B queries and N >= B documents where document i is the positive of query i and every other
document is a negative (documents B..N−1, if any, are extra negatives), or an explicit graded relevance matrix
(pairwise rank loss only). Both accept one (q, d) pair of embeddings or a mapping of nested sizes to pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smec.losses.matryoshka import LossOutput
from smec.validation import positive

__all__ = ["InfoNCELoss", "PairwiseRankLoss"]

Pairs = Mapping[int, tuple[Tensor, Tensor]]


def _as_pairs(q: Tensor | Pairs, d: Tensor | None) -> dict[int, tuple[Tensor, Tensor]]:
    if isinstance(q, Mapping):
        if d is not None:
            raise ValueError("pass either tensors q and d, or one mapping {dim: (q_m, d_m)} as q with d=None")
        pairs = dict(q)
    else:
        if d is None:
            raise ValueError("d is required when q is a tensor")
        pairs = {q.shape[-1]: (q, d)}
    for m, (q_m, d_m) in pairs.items():
        if q_m.ndim != 2 or d_m.ndim != 2 or q_m.shape[1] != d_m.shape[1] or d_m.shape[0] < q_m.shape[0]:
            raise ValueError(
                f"size {m}: expected q (B, d) and d (N, d) with N >= B, got {tuple(q_m.shape)} and {tuple(d_m.shape)}"
            )
    return pairs


def _per_dim(
    pairs: Mapping[int, tuple[Tensor, Tensor]],
    weights: Mapping[int, float] | None,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> LossOutput:
    """Σ_m w_m · loss_fn(q_m, d_m), with w_m = 1 unless given."""
    if weights is not None:
        if set(weights) != set(pairs):
            raise ValueError(f"weights has sizes {sorted(weights)}, embeddings have sizes {sorted(pairs)}")
        if any(not w > 0 for w in weights.values()):
            raise ValueError(f"weights must be positive, got {dict(weights)}")
    loss: Tensor | None = None
    per_dim: dict[int, Tensor] = {}
    for m, (q_m, d_m) in pairs.items():
        value = loss_fn(q_m, d_m)
        per_dim[m] = value.detach()
        weighted = value * (1.0 if weights is None else float(weights[m]))
        loss = weighted if loss is None else loss + weighted
    if loss is None:
        raise ValueError("no embeddings given")
    return LossOutput(loss=loss, per_dim=per_dim)


class PairwiseRankLoss(nn.Module):
    r"""Pairwise logistic rank loss of Matryoshka-Adaptor (arXiv 2407.20243, Eq. 6) / Search-Adaptor (arXiv
    2310.08750).

    For queries q_i, documents d_k and scores s_ik = ⟨q_i, d_k⟩ (cosine for unit-norm inputs), every pair of
    documents (j, k) that query i ranks by relevance, y_ij > y_ik, contributes

    .. math::

        (y_{ij} - y_{ik}) \, \log\big(1 + \exp((s_{ik} - s_{ij}) / τ)\big)

    and the loss is the weighted mean of these terms, Σ (y_ij − y_ik)·ℓ / Σ (y_ij − y_ik), so its scale does not
    depend on the batch size (the paper writes a sum). Without an explicit relevance matrix, y_ii = 1 and all
    other y_ik = 0 (in-batch negatives), which reduces to

        L = 1/(B(N−1)) Σ_i Σ_{k≠i} log(1 + exp((s_ik − s_ii)/τ)).

    Over nested sizes m the per-size losses are summed with weights w_m (default 1): L = Σ_m w_m L^(m).

    Args:
        temperature: τ > 0 dividing the score differences. Default 1.0, the papers' equation (raw cosines).

    Shapes:
        forward(q (B, d), d (N, d), relevance=None, weights=None), N >= B; or forward({m: (q_m, d_m)}, None, ...).
        Inputs are used as given (pass L2-normalised embeddings for cosine scores). ``relevance``: (B, N),
        entries >= 0, graded labels; the same matrix applies to every size. Returns `LossOutput` with
        per_dim[m] = L^(m).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = positive("temperature", temperature)

    def forward(
        self,
        q: Tensor | Pairs,
        d: Tensor | None = None,
        relevance: Tensor | None = None,
        weights: Mapping[int, float] | None = None,
    ) -> LossOutput:
        pairs = _as_pairs(q, d)
        if relevance is not None:
            q0, d0 = next(iter(pairs.values()))
            if relevance.shape != (q0.shape[0], d0.shape[0]):
                raise ValueError(
                    f"relevance must have shape (B, N) = {(q0.shape[0], d0.shape[0])}, got {tuple(relevance.shape)}"
                )
            if bool((relevance < 0).any()):
                raise ValueError("relevance must be >= 0")
            return _per_dim(pairs, weights, lambda q_m, d_m: self._graded(q_m @ d_m.T, relevance))
        return _per_dim(pairs, weights, lambda q_m, d_m: self._in_batch(q_m @ d_m.T))

    def _in_batch(self, scores: Tensor) -> Tensor:
        batch, n_docs = scores.shape
        if n_docs == 1:
            return scores.sum() * 0.0
        rows = torch.arange(batch, device=scores.device)
        positive = scores[rows, rows].unsqueeze(1)
        terms = F.softplus((scores - positive) / self.temperature)
        # Drop the k = i term (the positive against itself), which has no ordered pair.
        terms = terms.masked_fill(F.one_hot(rows, n_docs).bool(), 0.0)
        return terms.sum() / (batch * (n_docs - 1))

    def _graded(self, scores: Tensor, relevance: Tensor) -> Tensor:
        relevance = relevance.to(device=scores.device, dtype=scores.dtype)
        # y_ij > y_ik >= 0 implies y_ij > 0, so only the nonzero (i, j) entries can rank anything: this keeps
        # the work at nnz(relevance)·N instead of B·N².
        rows, cols = relevance.nonzero(as_tuple=True)
        pair_weight = (relevance[rows, cols].unsqueeze(1) - relevance[rows]).clamp_min(0.0)
        terms = F.softplus((scores[rows] - scores[rows, cols].unsqueeze(1)) / self.temperature)
        total = pair_weight.sum()
        if total == 0:
            return scores.sum() * 0.0
        return (pair_weight * terms).sum() / total


class InfoNCELoss(nn.Module):
    r"""InfoNCE over in-batch negatives (MultipleNegativesRanking), per nested size.

    With scores s_ik = ⟨q_i, d_k⟩ (cosine for unit-norm inputs) and positive d_i:

    .. math::

        L = -\frac{1}{B} \sum_i \log \frac{\exp(s_{ii}/τ)}{\sum_k \exp(s_{ik}/τ)}

    ``symmetric=True`` averages it with the document→query direction (needs N == B). Over nested sizes:
    L = Σ_m w_m L^(m), w_m default 1.

    Args:
        temperature: τ > 0. Default 0.05 (scale 20 in sentence-transformers; see docs/methods.md#wordnet-pilot).
        symmetric: also contrast each document against all queries. Default False.

    Shapes:
        forward(q (B, d), d (N, d), weights=None), N >= B, documents B..N−1 being extra negatives; or
        forward({m: (q_m, d_m)}, None, weights). Returns `LossOutput` with per_dim[m] = L^(m).
    """

    def __init__(self, temperature: float = 0.05, symmetric: bool = False) -> None:
        super().__init__()
        self.temperature = positive("temperature", temperature)
        self.symmetric = bool(symmetric)

    def forward(
        self, q: Tensor | Pairs, d: Tensor | None = None, weights: Mapping[int, float] | None = None
    ) -> LossOutput:
        return _per_dim(_as_pairs(q, d), weights, self._single)

    def _single(self, q: Tensor, d: Tensor) -> Tensor:
        logits = q @ d.T / self.temperature
        labels = torch.arange(q.shape[0], device=q.device)
        loss = F.cross_entropy(logits, labels)
        if self.symmetric:
            if d.shape[0] != q.shape[0]:
                raise ValueError(
                    f"symmetric InfoNCE needs as many documents as queries, got {d.shape[0]} vs {q.shape[0]}"
                )
            loss = (loss + F.cross_entropy(logits.T, labels)) / 2
        return loss

"""Supervised query–document losses over in-batch and mined negatives: the pairwise rank loss and InfoNCE.

Both take a batch of B queries and N >= B documents where document i is the positive of query i and every other
document is a negative (documents B..N−1, if any, are extra negatives), or an explicit graded relevance matrix
(pairwise rank loss only). Both accept one (q, d) pair of embeddings or a mapping of nested sizes to pairs.

Both also accept per-query negatives on top of the in-batch ones: ``negatives`` (B, K, d), row i holding query
i's own K negatives (e.g. mined hard negatives, :mod:`datamodules.negatives`), and ``mask`` (B, K) bool, False
for a padding slot, which then contributes nothing (docs/methods.md#supervised-regime). With a mapping of sizes,
``negatives`` is the mapping {m: (B, K, m)} of the same sizes; one mask serves every size. Without ``negatives``
both losses compute exactly what they computed before negatives existed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smec.losses.matryoshka import LossOutput
from smec.nn.decoder import nested
from smec.validation import positive

__all__ = ["InfoNCELoss", "PairBatch", "PairwiseRankLoss", "nested_rank_inputs"]

Pairs = Mapping[int, tuple[Tensor, Tensor]]
Negatives = Tensor | Mapping[int, Tensor]


@dataclass(frozen=True)
class PairBatch:
    """A training batch's (query, document) pairs and, when the data mined them, each query's negatives, stacked
    for one pass through a model and split back afterwards.

    Attributes:
        q / d: (B, D) queries and their positive documents; n: (B, K, D) mined negatives or None; mask: (B, K)
        bool, False for a padding slot (``"n_mask"`` of :mod:`datamodules.embedding`'s batches) or None.
    """

    q: Tensor
    d: Tensor
    n: Tensor | None = None
    mask: Tensor | None = None

    @classmethod
    def of(cls, batch: Mapping[str, Tensor], negatives: bool = True) -> PairBatch:
        """The pairs of a batch dict (keys ``q``, ``d``, optionally ``n`` / ``n_mask``; ``negatives=False``
        ignores the mined ones)."""
        n = batch.get("n") if negatives else None
        return cls(batch["q"], batch["d"], n, None if n is None else batch.get("n_mask"))

    @property
    def sizes(self) -> list[int]:
        """Row counts of :meth:`stacked`'s parts: queries, documents and (if any) the B·K negatives."""
        return [len(self.q), len(self.d)] + (
            [self.n.shape[0] * self.n.shape[1]] if self.n is not None else []
        )

    def stacked(self) -> Tensor:
        """(B + B + B·K, D): queries, documents, negatives (flattened query-major)."""
        return torch.cat([self.q, self.d] + ([self.n.flatten(0, 1)] if self.n is not None else []))

    def unstack(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """A model's output of :meth:`stacked` back as (B, m) queries, (B, m) documents, (B, K, m) negatives."""
        parts = y.split(self.sizes)
        n = parts[2].reshape(*self.n.shape[:2], -1) if self.n is not None else None
        return parts[0], parts[1], n


def nested_rank_inputs(
    q: Tensor, d: Tensor, n: Tensor | None, dims: Sequence[int]
) -> tuple[dict[int, tuple[Tensor, Tensor]], dict[int, Tensor] | None]:
    """``({m: (normalize(q[:, :m]), normalize(d[:, :m]))}, {m: normalize(n[..., :m])} or None)``: the papers'
    Sim is the cosine of the prefixes, for the queries, documents and mined negatives alike."""
    nq, nd = nested(q, dims), nested(d, dims)
    return {m: (nq[m], nd[m]) for m in dims}, (None if n is None else nested(n, dims))


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


def _as_negatives(
    pairs: Mapping[int, tuple[Tensor, Tensor]], negatives: Negatives | None, mask: Tensor | None
) -> tuple[dict[int, Tensor] | None, Tensor | None]:
    """Per-size negatives {m: (B, K, m)} and the (B, K) bool mask (all True if not given), checked."""
    if negatives is None:
        if mask is not None:
            raise ValueError("mask is given without negatives")
        return None, None
    if isinstance(negatives, Tensor):
        if len(pairs) != 1:
            raise ValueError(
                f"pass negatives as a mapping {{dim: (B, K, dim)}} for the sizes {sorted(pairs)}"
            )
        negatives = {next(iter(pairs)): negatives}
    negatives = dict(negatives)
    if set(negatives) != set(pairs):
        raise ValueError(f"negatives has sizes {sorted(negatives)}, embeddings have sizes {sorted(pairs)}")
    shape = None
    for m, (q_m, _) in pairs.items():
        n_m = negatives[m]
        if n_m.ndim != 3 or n_m.shape[0] != q_m.shape[0] or n_m.shape[2] != q_m.shape[1]:
            raise ValueError(
                f"size {m}: expected negatives (B, K, d) = ({q_m.shape[0]}, K, {q_m.shape[1]}), "
                f"got {tuple(n_m.shape)}"
            )
        shape = tuple(n_m.shape[:2])
    if mask is None:
        mask = torch.ones(shape, dtype=torch.bool, device=next(iter(negatives.values())).device)
    if mask.dtype != torch.bool or tuple(mask.shape) != shape:
        raise ValueError(
            f"mask must be a bool tensor of shape (B, K) = {shape}, got {mask.dtype} {tuple(mask.shape)}"
        )
    return negatives, mask


def _negative_scores(q: Tensor, n: Tensor) -> Tensor:
    """t_ij = ⟨q_i, n_ij⟩: each query against its own negatives only, (B, K)."""
    return torch.einsum("bd,bkd->bk", q, n)


def _per_dim(
    pairs: Mapping[int, tuple[Tensor, Tensor]],
    weights: Mapping[int, float] | None,
    loss_fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    negatives: Mapping[int, Tensor] | None = None,
) -> LossOutput:
    """Σ_m w_m · loss_fn(q_m, d_m, n_m), with w_m = 1 unless given (n_m None without negatives)."""
    if weights is not None:
        if set(weights) != set(pairs):
            raise ValueError(f"weights has sizes {sorted(weights)}, embeddings have sizes {sorted(pairs)}")
        if any(not w > 0 for w in weights.values()):
            raise ValueError(f"weights must be positive, got {dict(weights)}")
    loss: Tensor | None = None
    per_dim: dict[int, Tensor] = {}
    for m, (q_m, d_m) in pairs.items():
        value = loss_fn(q_m, d_m, None if negatives is None else negatives[m])
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

    Per-query negatives n_ij (j < K) with mask μ_ij ∈ {0, 1} are documents of relevance 0 that only query i
    sees; with t_ij = ⟨q_i, n_ij⟩ and ℓ(v) = log(1 + exp(v/τ)) they join the same mean:

        L = [Σ_i Σ_{k≠i} ℓ(s_ik − s_ii) + Σ_i Σ_j μ_ij ℓ(t_ij − s_ii)] / [B(N−1) + Σ_ij μ_ij]

    (graded: every nonzero y_ij ranks above each of query i's negatives with weight y_ij). A masked slot adds
    nothing to either sum; without ``negatives`` the loss is exactly the in-batch one above.

    Over nested sizes m the per-size losses are summed with weights w_m (default 1): L = Σ_m w_m L^(m).

    Args:
        temperature: τ > 0 dividing the score differences. Default 1.0, the papers' equation (raw cosines).

    Shapes:
        forward(q (B, d), d (N, d), relevance=None, weights=None, negatives=None, mask=None), N >= B; or
        forward({m: (q_m, d_m)}, None, ..., negatives={m: (B, K, m)}). Inputs are used as given (pass
        L2-normalised embeddings for cosine scores). ``relevance``: (B, N), entries >= 0, graded labels; the
        same matrix applies to every size. ``negatives``: (B, K, d), default None (in-batch only); ``mask``: (B,
        K) bool, True for a real negative (default: all real). Returns `LossOutput` with per_dim[m] = L^(m).
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
        negatives: Negatives | None = None,
        mask: Tensor | None = None,
    ) -> LossOutput:
        pairs = _as_pairs(q, d)
        negs, mask = _as_negatives(pairs, negatives, mask)
        if relevance is not None:
            q0, d0 = next(iter(pairs.values()))
            if relevance.shape != (q0.shape[0], d0.shape[0]):
                raise ValueError(
                    f"relevance must have shape (B, N) = {(q0.shape[0], d0.shape[0])}, got {tuple(relevance.shape)}"
                )
            if bool((relevance < 0).any()):
                raise ValueError("relevance must be >= 0")
            return _per_dim(
                pairs,
                weights,
                lambda q_m, d_m, n_m: self._graded(q_m @ d_m.T, relevance, q_m, n_m, mask),
                negs,
            )
        return _per_dim(
            pairs, weights, lambda q_m, d_m, n_m: self._in_batch(q_m @ d_m.T, q_m, n_m, mask), negs
        )

    def _in_batch(self, scores: Tensor, q: Tensor, n: Tensor | None, mask: Tensor | None) -> Tensor:
        batch, n_docs = scores.shape
        if n is None and n_docs == 1:
            return scores.sum() * 0.0
        rows = torch.arange(batch, device=scores.device)
        positive = scores[rows, rows].unsqueeze(1)
        terms = F.softplus((scores - positive) / self.temperature)
        # Drop the k = i term (the positive against itself), which has no ordered pair.
        terms = terms.masked_fill(F.one_hot(rows, n_docs).bool(), 0.0)
        if n is None:
            return terms.sum() / (batch * (n_docs - 1))
        mined = F.softplus((_negative_scores(q, n) - positive) / self.temperature).masked_fill(~mask, 0.0)
        count = batch * (n_docs - 1) + mask.sum()
        if count == 0:
            return scores.sum() * 0.0
        return (terms.sum() + mined.sum()) / count

    def _graded(
        self, scores: Tensor, relevance: Tensor, q: Tensor, n: Tensor | None, mask: Tensor | None
    ) -> Tensor:
        relevance = relevance.to(device=scores.device, dtype=scores.dtype)
        # y_ij > y_ik >= 0 implies y_ij > 0, so only the nonzero (i, j) entries can rank anything: this keeps
        # the work at nnz(relevance)·N instead of B·N².
        rows, cols = relevance.nonzero(as_tuple=True)
        pair_weight = (relevance[rows, cols].unsqueeze(1) - relevance[rows]).clamp_min(0.0)
        terms = F.softplus((scores[rows] - scores[rows, cols].unsqueeze(1)) / self.temperature)
        total, weighted = pair_weight.sum(), (pair_weight * terms).sum()
        if n is not None:
            # Query i's negatives have relevance 0: each of its relevant documents j ranks above them by y_ij.
            mined_weight = relevance[rows, cols].unsqueeze(1) * mask[rows].to(scores.dtype)
            mined = F.softplus(
                (_negative_scores(q, n)[rows] - scores[rows, cols].unsqueeze(1)) / self.temperature
            )
            total, weighted = total + mined_weight.sum(), weighted + (mined_weight * mined).sum()
        if total == 0:
            return scores.sum() * 0.0
        return weighted / total


class InfoNCELoss(nn.Module):
    r"""InfoNCE over in-batch negatives (MultipleNegativesRanking), per nested size.

    With scores s_ik = ⟨q_i, d_k⟩ (cosine for unit-norm inputs) and positive d_i:

    .. math::

        L = -\frac{1}{B} \sum_i \log \frac{\exp(s_{ii}/τ)}{\sum_k \exp(s_{ik}/τ)}

    Per-query negatives n_ij (mask μ_ij, t_ij = ⟨q_i, n_ij⟩) join query i's denominator only:
    Σ_k exp(s_ik/τ) + Σ_j μ_ij exp(t_ij/τ) (a masked slot is a logit of −∞, i.e. adds exactly 0).

    ``symmetric=True`` averages it with the document→query direction (needs N == B; the per-query negatives are
    documents, so they take no part in that direction). Over nested sizes: L = Σ_m w_m L^(m), w_m default 1.

    Args:
        temperature: τ > 0. Default 0.05 (scale 20 in sentence-transformers; see docs/methods.md#wordnet-pilot).
        symmetric: also contrast each document against all queries. Default False.

    Shapes:
        forward(q (B, d), d (N, d), weights=None, negatives=None, mask=None), N >= B, documents B..N−1 being
        extra negatives shared by all queries; or forward({m: (q_m, d_m)}, None, weights, {m: (B, K, m)}, mask).
        ``negatives`` (B, K, d), default None; ``mask`` (B, K) bool, True for a real negative (default: all).
        Returns `LossOutput` with per_dim[m] = L^(m).
    """

    def __init__(self, temperature: float = 0.05, symmetric: bool = False) -> None:
        super().__init__()
        self.temperature = positive("temperature", temperature)
        self.symmetric = bool(symmetric)

    def forward(
        self,
        q: Tensor | Pairs,
        d: Tensor | None = None,
        weights: Mapping[int, float] | None = None,
        negatives: Negatives | None = None,
        mask: Tensor | None = None,
    ) -> LossOutput:
        pairs = _as_pairs(q, d)
        negs, mask = _as_negatives(pairs, negatives, mask)
        return _per_dim(pairs, weights, lambda q_m, d_m, n_m: self._single(q_m, d_m, n_m, mask), negs)

    def _single(self, q: Tensor, d: Tensor, n: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        logits = q @ d.T / self.temperature
        labels = torch.arange(q.shape[0], device=q.device)
        if n is None:
            loss = F.cross_entropy(logits, labels)
        else:
            mined = (_negative_scores(q, n) / self.temperature).masked_fill(~mask, float("-inf"))
            loss = F.cross_entropy(torch.cat([logits, mined], dim=1), labels)
        if self.symmetric:
            if d.shape[0] != q.shape[0]:
                raise ValueError(
                    f"symmetric InfoNCE needs as many documents as queries, got {d.shape[0]} vs {q.shape[0]}"
                )
            loss = (loss + F.cross_entropy(logits.T, labels)) / 2
        return loss

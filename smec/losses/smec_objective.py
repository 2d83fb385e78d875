r"""SMEC's training objective: every term of one step, summed over the sizes the step trains.

On the representations a step trains (SMRL: stage t's block output z_t and its selection u_{t+1}; joint
training: every stage's pair, :meth:`smec.nn.smrl.SMRLCompressor.training_targets`):

.. math::

    L_t = \sum_{e} \big[ w_{pair} L_{pair}(e) + w_{topk} L_{topk}(e) + w_{rank} L_{rank}(e)
                         + w_{NCE} L_{NCE}(e) + w_{SXBM} L_{SXBM}(e) \big]

- L_pair / L_topk: similarity preservation of the batch rows against the frozen input's cosines (the
  concat-decoder loss, arXiv 2510.04626, and Matryoshka-Adaptor's top-k variant, arXiv 2407.20243, Eq. 4;
  :class:`~smec.losses.matryoshka.MatryoshkaSimilarityLoss`), unsupervised;
- L_rank: Matryoshka-Adaptor's pairwise logistic rank loss (Eq. 6) on (query, document) pairs with in-batch
  negatives, plus each query's mined hard negatives when the batch carries them (``"n"`` / ``"n_mask"``,
  compressed by the same pass and selection draw as the pairs at every size; docs/methods.md#supervised-regime),
  on L2-normalised embeddings; L_NCE the InfoNCE alternative (off by default);
- L_SXBM: the S-XBM alignment term (:class:`~smec.losses.sxbm.SXBM`).

Main term (the paper's L is a supervised rank loss). On the demo data (≈12k unlabelled rows, 2k labelled pairs) a
supervised term overfits (the WordNet pilot, docs/methods.md#wordnet-pilot), so the default makes the unsupervised
pair term the main term (pair_weight 1) and the rank loss a small nudge (rank_weight 0.1). Set ``pair_weight: 0,
rank_weight: 1`` for the paper's supervised reading on a large labelled set (docs/methods.md#smec-where-the-paper-is-silent).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smec.losses.matryoshka import LossOutput, MatryoshkaSimilarityLoss
from smec.losses.rank import InfoNCELoss, PairBatch, PairwiseRankLoss
from smec.validation import nonnegative, positive

__all__ = ["SMECObjective"]


class SMECObjective(nn.Module):
    """The weighted sum of SMEC's terms over the sizes of one step (module docstring).

    Args:
        sizes: every size of the chain (one pair / top-k loss each; each size is its own tensor, not a prefix).
        pair_weight: similarity-preservation term on the batch rows (default 1.0, the main term).
        distance: ``mse`` (default, the concat-decoder paper) or ``l1`` (Matryoshka-Adaptor), pair / top-k terms.
        topk / topk_weight: the top-k neighbour term over each row's k nearest in-batch rows (default off).
        rank_weight / rank_temperature: the supervised pairwise rank loss (defaults 0.1, τ = 1: the papers'
            equation on raw cosines).
        infonce_weight / infonce_temperature: InfoNCE alternative (defaults 0, τ = 0.05).
        sxbm_weight: λ of the S-XBM term (default 0: off).
    """

    TERMS = (
        "pair_weight",
        "distance",
        "topk",
        "topk_weight",
        "rank_weight",
        "rank_temperature",
        "infonce_weight",
        "infonce_temperature",
    )
    """The arguments a system passes through under their own names (all but ``sizes`` and ``sxbm_weight``)."""

    def __init__(
        self,
        sizes: Sequence[int],
        pair_weight: float = 1.0,
        distance: str = "mse",
        topk: int = 0,
        topk_weight: float = 0.0,
        rank_weight: float = 0.1,
        rank_temperature: float = 1.0,
        infonce_weight: float = 0.0,
        infonce_temperature: float = 0.05,
        sxbm_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.pair_weight = nonnegative("pair_weight", pair_weight)
        self.topk_weight = nonnegative("topk_weight", topk_weight)
        self.rank_weight = nonnegative("rank_weight", rank_weight)
        self.infonce_weight = nonnegative("infonce_weight", infonce_weight)
        self.sxbm_weight = nonnegative("sxbm_weight", sxbm_weight)

        def pair_loss(m: int, **kw: Any) -> MatryoshkaSimilarityLoss:
            return MatryoshkaSimilarityLoss([m], distance=distance, **kw)

        # No state in any of them; the val ones are the plain pair term, so val/loss compares across weights.
        self.val_losses = nn.ModuleDict({str(m): pair_loss(m) for m in sizes})
        self.pair_losses = nn.ModuleDict()
        if self.pair_weight > 0 or self.topk_weight > 0:
            for m in sizes:
                self.pair_losses[str(m)] = pair_loss(
                    m,
                    pair_weight=self.pair_weight,
                    topk=topk if self.topk_weight > 0 else 0,
                    topk_weight=self.topk_weight,
                )
        self.rank_loss = PairwiseRankLoss(positive("rank_temperature", rank_temperature))
        self.infonce_loss = InfoNCELoss(positive("infonce_temperature", infonce_temperature))

    @property
    def needs_pairs(self) -> bool:
        """Whether a step needs (query, document) pairs."""
        return self.rank_weight > 0 or self.infonce_weight > 0

    @property
    def trains_rows(self) -> bool:
        """Whether the pair / top-k terms train on the batch rows (S-XBM needs them too)."""
        return len(self.pair_losses) > 0

    def step_inputs(
        self, batch: Mapping[str, Tensor], needs_rows: bool, method: str
    ) -> tuple[Tensor, Tensor | None, PairBatch | None]:
        """What a training step passes through the compressor, stacked in the order rows, queries, documents,
        mined negatives (one pass, one selection draw), with the rows and the pairs it was stacked from.

        The pairs (and their negatives, when the batch has ``"n"``) only when a rank / InfoNCE term is on.
        """
        needs_pairs = self.needs_pairs
        x = batch.get("x")
        if (needs_rows and x is None) or (needs_pairs and ("q" not in batch or "d" not in batch)):
            keys = (["x"] if needs_rows else []) + (["q", "d"] if needs_pairs else [])
            raise ValueError(f"{method} training batches need keys {keys}, got {sorted(batch)}")
        rows = x if needs_rows else None
        pairs = PairBatch.of(batch) if needs_pairs else None
        parts = ([rows] if rows is not None else []) + ([pairs.stacked()] if pairs is not None else [])
        return torch.cat(parts), rows, pairs  # type: ignore[arg-type]

    def forward(
        self,
        targets: Sequence[tuple[int, Tensor]],
        rows: Tensor | None,
        pairs: tuple[int, int] | PairBatch | None,
        sxbm: Callable[[int, Tensor], Tensor] | None = None,
    ) -> LossOutput:
        """The step's loss and its unweighted terms summed over the sizes (``terms``, detached, for logs).

        Args:
            targets: (size, (N, size)) pairs; each tensor stacks the step's inputs in the order rows, queries,
                documents, mined negatives (one compressor pass, one selection draw; :meth:`step_inputs`).
            rows: the batch rows x (B, D) when the step uses them (the pair terms' target), else None.
            pairs: the step's :class:`~smec.losses.rank.PairBatch` (its mined negatives, if any, join the rank
                and InfoNCE terms at every size), or (number of queries, number of documents) without negatives,
                when the step uses pairs, else None.
            sxbm: ``(i, student rows at targets[i]) -> S-XBM term``, when the term is on this step.
        """
        mined = isinstance(pairs, PairBatch) and pairs.n is not None
        pair_sizes = pairs.sizes if isinstance(pairs, PairBatch) else list(pairs or [])
        split = ([len(rows)] if rows is not None else []) + pair_sizes
        loss = (rows if rows is not None else targets[0][1]).new_zeros(())
        terms: dict[str, Tensor] = {}

        def add(name: str, value: Tensor) -> None:
            terms[name] = terms.get(name, 0.0) + value.detach()

        for i, (m, e) in enumerate(targets):
            chunks = list(e.split(split))
            ex = chunks.pop(0) if rows is not None else None
            if self.pair_losses:
                out = self.pair_losses[str(m)](ex, rows)
                loss = loss + out.loss
                for name, value in out.terms.items():
                    add(name, value)
            if pairs is not None:
                eq, ed = F.normalize(chunks[0], dim=-1), F.normalize(chunks[1], dim=-1)
                en = F.normalize(chunks[2].reshape(*pairs.n.shape[:2], -1), dim=-1) if mined else None  # type: ignore[union-attr]
                mask = pairs.mask if mined else None  # type: ignore[union-attr]
                if self.rank_weight > 0:
                    rank = self.rank_loss(eq, ed, negatives=en, mask=mask).loss
                    loss = loss + self.rank_weight * rank
                    add("rank", rank)
                if self.infonce_weight > 0:
                    nce = self.infonce_loss(eq, ed, negatives=en, mask=mask).loss
                    loss = loss + self.infonce_weight * nce
                    add("infonce", nce)
            if sxbm is not None:
                term = sxbm(i, ex)  # type: ignore[arg-type]
                loss = loss + self.sxbm_weight * term
                add("sxbm", term)
        if sxbm is None and self.sxbm_weight > 0:
            terms["sxbm"] = loss.new_zeros(())  # logged as 0 while the term is off (warm-up)
        return LossOutput(loss=loss, terms=terms)

    def validation(self, out: dict[int, Tensor], x: Tensor) -> dict[int, Tensor]:
        """The plain pair term of every size in ``out`` ({size: (B, size)}) against the rows x."""
        return {m: self.val_losses[str(m)](z, x).loss for m, z in out.items()}

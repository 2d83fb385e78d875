"""Similarity preservation across nested dimensions: the concat-decoder MRL loss (arXiv 2510.04626) and
Matryoshka-Adaptor's unsupervised losses (arXiv 2407.20243, Eq. 4).

Also home of `LossOutput`, what every loss of smec returns.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smec.errors import ConfigError
from smec.losses.alignment import pair_cosines
from smec.losses.reconstruction import reconstruction_loss
from smec.validation import check_dims, check_weights, integer, nonnegative, one_of, optional_positive_int

__all__ = ["DISTANCES", "LossOutput", "MatryoshkaSimilarityLoss"]

DISTANCES = ("mse", "l1")


@dataclass(frozen=True)
class LossOutput:
    """What a loss returns.

    Attributes:
        loss: scalar to back-propagate.
        per_dim: nested size m → that size's (unweighted) loss, detached, for logging.
        terms: named components (e.g. ``"pair"``, ``"topk"``, ``"reconstruction"``), detached, for logging.
    """

    loss: Tensor
    per_dim: dict[int, Tensor] = field(default_factory=dict)
    terms: dict[str, Tensor] = field(default_factory=dict)


def _cosine_matrix(z: Tensor) -> Tensor:
    z = F.normalize(z, dim=-1)
    return z @ z.T


class MatryoshkaSimilarityLoss(nn.Module):
    r"""Preserve the input's pairwise cosine similarities at every nested size of the decoder output.

    The concat-decoder paper's loss (arXiv 2510.04626; the authors' code, ``loss.py``), for a batch of B inputs x_i
    (the frozen concatenation) and decoder outputs y_i, with ŷ_i^m = normalize(y_i[:m]):

    .. math::

        L_{pair} = \sum_{m \in M} w_m \frac{1}{B^2} \sum_{i,j} \big(\cos(ŷ_i^m, ŷ_j^m) - \cos(x_i, x_j)\big)^2

    with the diagonal (i = j) of both similarity matrices zeroed. The mean runs over all B² entries as in the
    paper's code, so it equals the off-diagonal MSE × (B−1)/B. Weights default to 1 (the paper: equal weights).

    Matryoshka-Adaptor's unsupervised objective (arXiv 2407.20243, Eq. 4) is covered too:
    ``distance="l1"`` replaces the square by |·|; ``topk``/``topk_weight`` add its local term over each item's k
    nearest neighbours *in the input space*,
    L_topk = Σ_m w_m mean_{i, j∈NN_k(i)} dist(cos(ŷ_i^m, ŷ_j^m) − cos(x_i, x_j)),
    the neighbours found in the batch, or given by the caller (``neighbours``: e.g. each row's corpus
    neighbours, :class:`smec.nn.corpus_neighbours.CorpusNeighbours`, passed through the trained model so that
    ŷ_j carries gradient; masked slots are left out of the mean);
    ``reconstruction_weight`` adds L_rec = mean |y − x[:, :d_max]| (:func:`~smec.losses.reconstruction.reconstruction_loss`; only meaningful for a residual adaptor,
    where it equals mean |g(x)|), or mean |y − target| for an explicit target. The paper sums these terms; here
    they are means, so their scale does not depend on B, k or d_max. Total:

        loss = pair_weight·L_pair + topk_weight·L_topk + reconstruction_weight·L_rec

    The target cos(x_i, x_j) is computed from ``x.detach()``: the input space is frozen.

    Args:
        dims: nested sizes M, sorted ascending, unique, positive (e.g. ``[32, 64, 128, 256, 512]``).
        weights: w_m, one positive number per dim; None (default) → all 1.
        n_dims_per_step: train a random subset of this many dims per step (as sentence-transformers'
            MatryoshkaLoss; torch's RNG, so Lightning's seed_everything makes it reproducible). -1 (default) or a
            number >= len(dims) → all dims.
        output_dim: d_max of the decoder, if known: dims must be <= it, and a warning is issued when it is not in
            dims (the full output would then never be trained).
        topk: k of the top-k neighbour term (0 = off, default). Capped at B−1 for small batches.
        topk_weight: weight of the top-k term (default 0.0). Must be 0 when topk is 0.
        reconstruction_weight: weight of L_rec (default 0.0).
        pair_weight: weight of the all-pairs term (default 1.0; Matryoshka-Adaptor's α).
        distance: ``"mse"`` (default, the concat-decoder paper) | ``"l1"`` (Matryoshka-Adaptor).

    Shapes:
        forward(y (B, d_max), x (B, D), reconstruction_target=None, neighbours=None) → `LossOutput` with
        ``per_dim[m] = pair_weight·L_pair,m + topk_weight·L_topk,m`` (before w_m) for the dims used this step,
        so ``loss = Σ_m w_m·per_dim[m] + reconstruction_weight·L_rec``; ``terms`` holds the w-weighted
        ``"pair"``, ``"topk"`` and ``"reconstruction"`` totals of the enabled terms.

    Example::

        loss_fn = MatryoshkaSimilarityLoss([32, 64, 128, 256, 512], output_dim=512)
        out = loss_fn(decoder(x), x)
        out.loss.backward()
    """

    def __init__(
        self,
        dims: Sequence[int],
        weights: Sequence[float] | None = None,
        n_dims_per_step: int = -1,
        output_dim: int | None = None,
        topk: int = 0,
        topk_weight: float = 0.0,
        reconstruction_weight: float = 0.0,
        pair_weight: float = 1.0,
        distance: str = "mse",
    ) -> None:
        super().__init__()
        optional_positive_int("output_dim", output_dim)
        self.dims = check_dims(dims, output_dim)
        self.weights = check_weights(weights, len(self.dims))
        if (
            isinstance(n_dims_per_step, bool)
            or not isinstance(n_dims_per_step, int)
            or (n_dims_per_step < 1 and n_dims_per_step != -1)
        ):
            raise ConfigError(
                f"n_dims_per_step must be -1 (all dims) or a positive int, got {n_dims_per_step!r}"
            )
        integer("topk", topk, minimum=0)
        self.topk_weight = nonnegative("topk_weight", topk_weight)
        self.reconstruction_weight = nonnegative("reconstruction_weight", reconstruction_weight)
        self.pair_weight = nonnegative("pair_weight", pair_weight)
        if self.topk_weight > 0 and topk == 0:
            raise ConfigError(
                f"topk_weight={topk_weight} needs topk > 0 (the number of neighbours), got topk=0"
            )
        if topk > 0 and self.topk_weight == 0:
            warnings.warn(f"topk={topk} has no effect with topk_weight=0.0", stacklevel=2)
        if self.pair_weight == self.topk_weight == self.reconstruction_weight == 0:
            raise ConfigError(
                "pair_weight, topk_weight and reconstruction_weight are all 0: nothing to train"
            )
        one_of("distance", distance, DISTANCES)
        if output_dim is not None and output_dim not in self.dims:
            warnings.warn(
                f"output_dim={output_dim} is not in dims {list(self.dims)}: the full decoder output will not be "
                "trained directly",
                stacklevel=2,
            )
        self.n_dims_per_step = n_dims_per_step
        self.output_dim = output_dim
        self.topk = topk
        self.distance = distance

    def _dist(self, diff: Tensor) -> Tensor:
        return diff.square() if self.distance == "mse" else diff.abs()

    def _given_neighbours(self, y_m: Tensor, neighbours: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
        """mean over kept (i, j) of dist(cos(ŷ_i^m, ŷ_j^m) − t_ij), the neighbours' outputs given."""
        y_neighbours, teacher, keep, inverse = neighbours
        m = y_m.shape[1]
        student = pair_cosines(y_m, y_neighbours[:, :m], inverse)
        errors = self._dist(student - teacher.detach()) * keep
        return errors.sum() / keep.sum().clamp_min(1)

    def _step_dims(self) -> list[int]:
        """Indices into self.dims used this step (all, or a sorted random subset)."""
        n = len(self.dims)
        if self.n_dims_per_step == -1 or self.n_dims_per_step >= n:
            return list(range(n))
        return sorted(torch.randperm(n)[: self.n_dims_per_step].tolist())

    def forward(
        self,
        y: Tensor,
        x: Tensor,
        reconstruction_target: Tensor | None = None,
        neighbours: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    ) -> LossOutput:
        """Compute the loss.

        Args:
            y: decoder output (B, d_max), raw; each nested size is L2-normalised here.
            x: the frozen input (B, D) whose cosine similarities are the target.
            reconstruction_target: (B, d_max) target of L_rec; default x[:, :d_max].
            neighbours: the top-k term's neighbours instead of the batch's: ``(y_neighbours (U, d_max), teacher
                (B, K), keep (B, K) bool, inverse (B, K))`` — the model's output of U distinct neighbour rows,
                the frozen cosines cos(x_i, x_j), which slots count, and each slot's row in ``y_neighbours``.
        """
        if y.ndim != 2 or x.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"expected y (B, d_max) and x (B, D), got {tuple(y.shape)} and {tuple(x.shape)}")
        if y.shape[1] < self.dims[-1]:
            raise ValueError(f"y has {y.shape[1]} columns, fewer than the largest dim {self.dims[-1]}")

        batch = y.shape[0]
        off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=y.device)
        target = _cosine_matrix(x.detach()) * off_diagonal
        k = min(self.topk, batch - 1) if self.topk_weight > 0 and neighbours is None else 0
        if k > 0:
            # Neighbours in the input space, excluding the item itself.
            in_batch = target.masked_fill(~off_diagonal, float("-inf")).topk(k, dim=1).indices
            target_topk = target.gather(1, in_batch)

        zero = y.new_zeros(())
        loss, pair_total, topk_total = zero, zero, zero
        per_dim: dict[int, Tensor] = {}
        for i in self._step_dims():
            m, w = self.dims[i], self.weights[i]
            sim = _cosine_matrix(y[:, :m]) * off_diagonal
            term = zero
            if self.pair_weight > 0:
                pair = self._dist(sim - target).sum() / batch**2
                pair_total = pair_total + w * pair.detach()
                term = term + self.pair_weight * pair
            if k > 0:
                local = self._dist(sim.gather(1, in_batch) - target_topk).mean()
                topk_total = topk_total + w * local.detach()
                term = term + self.topk_weight * local
            if neighbours is not None and self.topk_weight > 0:
                local = self._given_neighbours(y[:, :m], neighbours)
                topk_total = topk_total + w * local.detach()
                term = term + self.topk_weight * local
            per_dim[m] = term.detach()
            loss = loss + w * term

        terms: dict[str, Tensor] = {}
        if self.pair_weight > 0:
            terms["pair"] = pair_total
        if k > 0 or (neighbours is not None and self.topk_weight > 0):
            terms["topk"] = topk_total
        if self.reconstruction_weight > 0:
            if reconstruction_target is None:
                if x.shape[1] < y.shape[1]:
                    raise ValueError(
                        f"reconstruction needs x with >= {y.shape[1]} columns or an explicit "
                        f"reconstruction_target, got x {tuple(x.shape)}"
                    )
                reconstruction_target = x[:, : y.shape[1]]
            if reconstruction_target.shape != y.shape:
                raise ValueError(
                    f"reconstruction_target must have shape {tuple(y.shape)}, "
                    f"got {tuple(reconstruction_target.shape)}"
                )
            rec = reconstruction_loss(y, reconstruction_target)
            terms["reconstruction"] = rec.detach()
            loss = loss + self.reconstruction_weight * rec
        return LossOutput(loss=loss, per_dim=per_dim, terms=terms)

"""Additive quantisers at the int8 budgets: faiss LSQ (local search quantisation) and RQ (residual quantisation).

Both code a vector as a sum of M codewords, one from each of M codebooks of 256 entries (``LSQ{M}x8`` /
``RQ{M}x8``), so a code is M bytes whatever the input width: 48 or 96 bytes are the 96x / 48x budgets of a
1152-d float32 input. With the inner-product metric faiss stores no norm (search type ``ST_LUT_nonorm``), so
``sa_code_size() == M``.

* RQ trains codebook m by k-means on the residuals left by codebooks 1..m-1 and encodes by beam search
  (``beam_size`` candidates kept per step).
* LSQ trains all M codebooks jointly, alternating least-squares codebook updates with an iterated local search
  (ICM with random perturbations) over the codes; encoding runs that search too.

Scoring is asymmetric: the float query against the decoded corpus by inner product, through look-up tables
(one 256-entry table per codebook).

Cost, measured on the 2-core machine while other jobs held it (load 8-12, so wall time is ~3x CPU time), on
10,000 rows of 1152-d vectors:

* RQ, M = 48, greedy beam, 5 k-means rounds per codebook, plain k-means: 203 s wall / 72 s CPU to train
  (2,000 rows encoded in 2.2 s CPU); M = 8 with faiss's default progressive-dimension k-means: 126 s wall vs
  28 s with plain k-means. Training cost grows with M, the rows and the width; hence the defaults: greedy
  encoding, 5 rounds, plain k-means, at most ``max_train = 5000`` rows (linear in rows and M: an estimated
  ~36 s / ~72 s CPU at M = 48 / 96 on 1152 dims, i.e. a few tens of seconds on a quiet 2-core machine, minutes
  of wall time on a busy one). Encoding the corpus costs about as much again.
* LSQ: every training round solves a (256 M)^2 linear system for the codebooks, independent of the rows:
  M = 8 (2,048^2) took 50 s wall / 27 s CPU for 4 rounds; M = 48 means 12,288^2 (1.2 GB in float64, ~200x
  the M = 8 solve per round): out of reach here. Use the product variant (``splits``): PLSQ with S slices of
  M / S codebooks solves S systems of (256 M / S)^2, e.g. M = 48 as 16 slices of 3 codebooks (768^2 each).
"""

from __future__ import annotations

import copy
import warnings

import faiss
import numpy as np

from smec.evaluation.codes.base import Code, sorted_by_score
from smec.evaluation.errors import FAISS_MIN_POINTS_PER_CENTROID, EvaluationError, SmallSampleWarning

ADDITIVE_KINDS = ("lsq", "rq")


class AdditiveCode(Code):
    """faiss ``LSQ{M}x8`` or ``RQ{M}x8`` with the inner-product metric (M bytes per vector).

    Args:
        kind: ``"rq"`` or ``"lsq"``.
        m: number of codebooks = bytes per vector (8-bit codebooks); None (default): sized by the grid, M = the
            budget's bytes (a multiple of ``splits``; :meth:`for_budget`), so one entry makes a row per budget.
        max_train: rows of the corpus sample used for training (a seeded subsample above it); default 5000,
            which leaves ~20 rows per centroid.
        iterations: RQ: k-means rounds per codebook (default 5); LSQ: training rounds (default 4).
        beam_size: RQ only, beam width of the encoder (default 1: greedy).
        encode_iters: LSQ only, local-search rounds when encoding (default 4).
        splits: 1 (default) or the number of sub-spaces of a product quantiser (faiss ``PRQ{splits}x{m/splits}x8``
            / ``PLSQ...``): the input is cut into ``splits`` equal slices, each coded with ``m / splits``
            codebooks; what makes LSQ affordable at these budgets.
        rescore, seed: see ``Code`` (seed: k-means / LSQ initialisation and the training subsample).
    """

    family = "additive"
    symmetric = False

    def __init__(
        self,
        kind: str = "rq",
        m: int | None = None,
        *,
        max_train: int = 5000,
        iterations: int | None = None,
        beam_size: int = 1,
        encode_iters: int = 4,
        splits: int = 1,
        rescore: int | None = None,
        seed: int = 0,
    ) -> None:
        if kind not in ADDITIVE_KINDS:
            raise EvaluationError(f"additive: kind must be one of {list(ADDITIVE_KINDS)}, got {kind!r}")
        if m is not None and (isinstance(m, bool) or int(m) != m or m < 1):
            raise EvaluationError(f"{kind}: m (codebooks = bytes per vector) must be >= 1 or None, got {m}")
        if iterations is None:
            iterations = 5 if kind == "rq" else 4
        for what, value in (("max_train", max_train), ("iterations", iterations)):
            if value < 1:
                raise EvaluationError(f"{kind}: {what} must be >= 1, got {value}")
        if kind == "rq" and beam_size < 1:
            raise EvaluationError(f"rq: beam_size must be >= 1, got {beam_size}")
        if kind == "lsq" and encode_iters < 1:
            raise EvaluationError(f"lsq: encode_iters must be >= 1, got {encode_iters}")
        if splits < 1 or (m is not None and m % splits):
            raise EvaluationError(f"{kind}: splits must be a positive divisor of m={m}, got {splits}")
        self.kind = kind
        self.splits = int(splits)
        self.m = None if m is None else int(m)
        self.max_train = int(max_train)
        self.iterations = int(iterations)
        self.beam_size = int(beam_size)
        self.encode_iters = int(encode_iters)
        super().__init__(rescore=rescore, seed=seed)

    @property
    def name(self) -> str:
        return self.kind if self.splits == 1 else f"p{self.kind}"

    def bytes_for_dim(self, dim: int) -> int:
        return self._codebooks()

    def for_budget(self, budget_bytes: int) -> AdditiveCode | None:
        if self.m is not None:
            return self
        m = budget_bytes // self.splits * self.splits
        if m < 1:
            return None
        sized = copy.copy(self)
        sized.m = m
        return sized

    def _codebooks(self) -> int:
        if self.m is None:
            raise EvaluationError(
                f"{self.name}: m (codebooks = bytes per vector) is None: give m, or run it in a grid budget"
                " (M = the budget's bytes)"
            )
        return self.m

    def _scoring(self) -> str:
        if self.splits == 1:
            return f"{self.kind}-lut"
        return f"p{self.kind}{self.splits}x{self._codebooks() // self.splits}-lut"

    def _check_dim(self, dim: int) -> None:
        if dim % self.splits:
            raise EvaluationError(f"{self.name}: input dim {dim} is not divisible by splits={self.splits}")

    def _fit(self, x: np.ndarray) -> None:
        if x.shape[0] < 256:
            raise EvaluationError(
                f"{self.kind}: needs at least 256 training vectors (256 codewords), got {x.shape[0]}"
            )
        if x.shape[0] > self.max_train:
            rows = np.sort(np.random.default_rng(self.seed).choice(x.shape[0], self.max_train, replace=False))
            x = np.ascontiguousarray(x[rows])
        d, m = x.shape[1], self._codebooks()
        metric = faiss.METRIC_INNER_PRODUCT
        per_split = m // self.splits
        if self.kind == "rq":
            if self.splits == 1:
                index = faiss.IndexResidualQuantizer(d, m, 8, metric)
                quantizers = [index.rq]
            else:
                index = faiss.IndexProductResidualQuantizer(d, self.splits, per_split, 8, metric)
                quantizers = [
                    faiss.downcast_AdditiveQuantizer(index.prq.subquantizer(i)) for i in range(self.splits)
                ]
            for i, rq in enumerate(quantizers):
                # Plain k-means per step: faiss's default progressive-dimension k-means cost 4x more time here.
                rq.train_type = faiss.ResidualQuantizer.Train_default
                rq.max_beam_size = self.beam_size
                rq.cp.niter = self.iterations
                rq.cp.seed = self.seed + i
                # faiss prints its small-sample warning once per codebook (32 lines for one demo grid); the
                # threshold only gates the print. One SmallSampleWarning below says it instead.
                rq.cp.min_points_per_centroid = 1
            if len(x) < FAISS_MIN_POINTS_PER_CENTROID * 256:
                warnings.warn(
                    f"{self.name.upper()} trained on {len(x):,} rows (max_train); faiss recommends >= "
                    f"{FAISS_MIN_POINTS_PER_CENTROID * 256:,}",
                    SmallSampleWarning,
                    stacklevel=3,
                )
        else:
            if self.splits == 1:
                index = faiss.IndexLocalSearchQuantizer(d, m, 8, metric)
                quantizers = [index.lsq]
            else:
                index = faiss.IndexProductLocalSearchQuantizer(d, self.splits, per_split, 8, metric)
                quantizers = [
                    faiss.downcast_AdditiveQuantizer(index.plsq.subquantizer(i)) for i in range(self.splits)
                ]
            for i, lsq in enumerate(quantizers):
                lsq.train_iters = self.iterations
                lsq.encode_ils_iters = self.encode_iters
                lsq.random_seed = self.seed + i
        self._quantizers = quantizers  # views into the index: keep the wrappers with it
        index.train(x)
        self._index = index

    @property
    def faiss_index(self) -> faiss.Index:
        """The trained ``IndexResidualQuantizer`` / ``IndexLocalSearchQuantizer``."""
        self._fitted_dim()
        return self._index

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self._index.sa_encode(x)

    def _add(self, x: np.ndarray) -> None:
        self._index.reset()
        self._index.add(x)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, idx = self._index.search(queries, k)
        return sorted_by_score(scores, idx)

"""Scalar quantisers with learned per-dimension ranges: faiss ``IndexScalarQuantizer`` SQ8 / SQ4.

The evaluator's ``int8`` / ``int4`` precisions (quantize.py ``ScalarQuantizer``) take each dimension's range
from its corpus min and max, so one outlier widens every step. These codes learn the range instead
(``faiss.ScalarQuantizer.rangestat``), per dimension, on the corpus sample:

* ``"quantiles"`` (``RS_quantiles``): ``[x_(o), x_(n-1-o)]``, the o-th smallest and largest sample values with
  ``o = floor(rangestat_arg * n)``; values outside are clipped. ``rangestat_arg`` is the fraction cut at each
  end (default 0.001: 10 of 10,000 sample values per side; 0 = min–max). On the demo (SQ4 of PCA-96, 48 bytes)
  0.001 gave nDCG@10 0.256, 0.01 and 0.0001 0.254 (experiments/rivals_probe.py).
* ``"optim"`` (``RS_optim``): the uniform grid ``b + a * {0 .. 2^bits - 1}`` that minimises the squared
  reconstruction error of the sample, by alternating assignment and least-squares refits of (a, b) from the
  min–max grid (faiss, up to 2000 rounds; no argument). faiss solves the 2 x 2 normal equations from float32
  sums, which break down when a dimension's sample collapses onto few levels: on the demo's concatenation
  SQ8 came back with NaN or far-off ranges on 28 of 96 dims (nDCG 0 if used), SQ4 with NaN on 1 of 192. Those
  dims (range not finite, not positive, or reaching more than one sample span beyond the sample's min / max)
  get the ``"quantiles"`` range at 0.001 instead; ``fallback_dims`` counts them and the row's scoring label
  names them, e.g. ``sq-optim(q0.001 on 2 dims)-asym``.

Two faiss quirks (1.15.1) this class works around or documents: its per-dimension range training shares one
result buffer between OpenMP threads (ranges race and change from run to run), so training runs on one
thread; and its transpose of the sample skips row 0, which every dimension sees as a 0 instead (one value in
n: the ranges can sit one order statistic off the exact quantile).

Decoding is the bin centre, as for the min–max quantiser. Bytes per vector: d (SQ8) or ``ceil(d / 2)`` (SQ4),
no per-vector factor.

Scoring: ``"asymmetric"`` (default) — faiss's own search, the float query against the decoded corpus by inner
product; ``"symmetric"`` — the query is encoded and decoded with the same quantiser first (the evaluator's
default for its int rows, but without renormalising either side).
"""

from __future__ import annotations

import faiss
import numpy as np

from smec.evaluation.codes.base import Code, faiss_threads, sorted_by_score
from smec.evaluation.errors import EvaluationError

RANGESTATS = {"quantiles": "RS_quantiles", "optim": "RS_optim"}
# The range of the dims where faiss's RS_optim fails (see the module doc).
FALLBACK_QUANTILE = 0.001
SQ_SCORINGS = ("asymmetric", "symmetric")


class LearnedRangeSQ(Code):
    """SQ8 / SQ4 with ``RS_quantiles`` or ``RS_optim`` ranges per dimension.

    Args:
        bits: 8 or 4.
        rangestat: ``"quantiles"`` (default) or ``"optim"``.
        rangestat_arg: for ``"quantiles"``, the fraction of sample values clipped at each end, in [0, 0.5)
            (default 0.001); must be left at None for ``"optim"``.
        scoring: ``"asymmetric"`` (default) or ``"symmetric"``.
        rescore, seed: see ``Code`` (the fit itself draws nothing at random).
    """

    family = "scalar"

    def __init__(
        self,
        bits: int = 8,
        *,
        rangestat: str = "quantiles",
        rangestat_arg: float | None = None,
        scoring: str = "asymmetric",
        rescore: int | None = None,
        seed: int = 0,
    ) -> None:
        if bits not in (8, 4):
            raise EvaluationError(f"sq: bits must be 8 or 4, got {bits!r}")
        if rangestat not in RANGESTATS:
            raise EvaluationError(f"sq: rangestat must be one of {list(RANGESTATS)}, got {rangestat!r}")
        if rangestat == "optim" and rangestat_arg is not None:
            raise EvaluationError("sq: rangestat 'optim' takes no rangestat_arg (it is only for 'quantiles')")
        if rangestat_arg is None:
            rangestat_arg = 0.001 if rangestat == "quantiles" else 0.0
        if not 0.0 <= rangestat_arg < 0.5:
            raise EvaluationError(
                f"sq: rangestat_arg (fraction clipped at each end) must be in [0, 0.5), got {rangestat_arg!r}"
            )
        if scoring not in SQ_SCORINGS:
            raise EvaluationError(f"sq: scoring must be one of {list(SQ_SCORINGS)}, got {scoring!r}")
        self.bits = int(bits)
        self.rangestat = rangestat
        self.rangestat_arg = float(rangestat_arg)
        self.sq_scoring = scoring
        self.fallback_dims = 0
        super().__init__(rescore=rescore, seed=seed)

    @property
    def symmetric(self) -> bool:  # type: ignore[override]
        return self.sq_scoring == "symmetric"

    @property
    def name(self) -> str:
        return f"sq{self.bits}-{self.rangestat}"

    def bytes_for_dim(self, dim: int) -> int:
        return dim if self.bits == 8 else (dim + 1) // 2

    def _scoring(self) -> str:
        stat = f"q{self.rangestat_arg:g}" if self.rangestat == "quantiles" else "optim"
        if self.fallback_dims:
            stat += f"(q{FALLBACK_QUANTILE:g} on {self.fallback_dims} dims)"
        return f"sq-{stat}-{'sym' if self.symmetric else 'asym'}"

    def _train(self, x: np.ndarray, rangestat: str, arg: float) -> faiss.IndexScalarQuantizer:
        qtype = faiss.ScalarQuantizer.QT_8bit if self.bits == 8 else faiss.ScalarQuantizer.QT_4bit
        index = faiss.IndexScalarQuantizer(x.shape[1], qtype, faiss.METRIC_INNER_PRODUCT)
        index.sq.rangestat = getattr(faiss.ScalarQuantizer, RANGESTATS[rangestat])
        index.sq.rangestat_arg = arg
        # faiss trains the dims in an OpenMP loop that shares one 2-float result buffer between threads, so
        # with more than one thread dims get each other's ranges (different on every run): train serially.
        with faiss_threads(1):
            index.train(x)
        return index

    def _fit(self, x: np.ndarray) -> None:
        index = self._train(x, self.rangestat, self.rangestat_arg)
        self.fallback_dims = 0
        if self.rangestat == "optim":
            d = x.shape[1]
            trained = faiss.vector_to_array(index.sq.trained)
            vmin, vdiff = trained[:d], trained[d:]
            lo, hi = x.min(axis=0), x.max(axis=0)
            span = hi - lo
            with np.errstate(invalid="ignore"):
                failed = ~(np.isfinite(vmin) & np.isfinite(vdiff) & (vdiff > 0))
                failed |= (vmin < lo - span) | (vmin + vdiff > hi + span)
            if failed.any():
                # Hold the fallback index while reading: swig's .sq view does not keep its owner alive.
                quantile_index = self._train(x, "quantiles", FALLBACK_QUANTILE)
                fallback = faiss.vector_to_array(quantile_index.sq.trained)
                trained[:d][failed] = fallback[:d][failed]
                trained[d:][failed] = fallback[d:][failed]
                faiss.copy_array_to_vector(trained.astype(np.float32), index.sq.trained)
                self.fallback_dims = int(failed.sum())
        self._index = index

    @property
    def faiss_index(self) -> faiss.Index:
        """The trained ``IndexScalarQuantizer``."""
        self._fitted_dim()
        return self._index

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, bytes_per_vector) uint8 -> (n, d) float32 bin centres."""
        self._fitted_dim()
        return self._index.sa_decode(np.ascontiguousarray(codes, dtype=np.uint8))

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self._index.sa_encode(x)

    def _add(self, x: np.ndarray) -> None:
        self._index.reset()
        self._index.add(x)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.symmetric:
            queries = self.decode(self._encode(queries))
        scores, idx = self._index.search(queries, k)
        return sorted_by_score(scores, idx)

"""RaBitQ codes (Gao & Long, SIGMOD 2024; multi-bit: extended RaBitQ) through faiss ``"RR,RaBitQ{b}"``.

``fit``: a seeded random rotation (faiss ``RandomRotationMatrix``; with ``out_dim`` < d a random orthonormal
projection, faiss ``"RR{out_dim}"``) and faiss's ``IndexRaBitQ`` with the inner-product metric, whose training
stores the sample mean as the centre. Each corpus vector ``o`` is coded relative to that centre ``c``: the sign
bit of every rotated coordinate of ``o - c`` (plus ``bits - 1`` extra bits per coordinate for the multi-bit
codes) and per-vector float32 factors that make the inner-product estimate unbiased.

True size per vector (faiss ``RaBitQuantizer::compute_code_size``; the tests check it against
``sa_code_size()``), with D = the rotated width:

* 1 bit: ``ceil(D / 8)`` sign bytes + 8 bytes (``||o - c||`` term and the dot-product multiplier, 2 float32);
* b bits (2..9): ``ceil(D / 8)`` + 12 (the two factors and an error bound) + ``ceil(D (b - 1) / 8)`` extra-bit
  bytes + 8 (two extra-bit factors).

So 1-bit RaBitQ of a 1152-d vector takes 152 bytes, not 144, and 96 bytes buy 704 dims at 1 bit, 304 at 2 bits
and 152 at 4 bits.

Scoring is asymmetric: the query is not coded like the corpus; faiss quantises the rotated query ``q - c`` to
``qb`` bits per coordinate (``qb = 0``: float query) and estimates ``<q, o>`` from the codes and factors.
``centered=True`` quantises the query with a zero-centred scalar quantiser instead of its min–max range.
"""

from __future__ import annotations

import faiss
import numpy as np

from smec.evaluation.codes.base import Code, require_faiss, sorted_by_score
from smec.evaluation.errors import EvaluationError

RABITQ_BITS = tuple(range(1, 10))


def rabitq_code_size(dim: int, bits: int) -> int:
    """Bytes per vector of faiss's RaBitQ at width ``dim`` and ``bits`` per coordinate (see module doc)."""
    signs = (dim + 7) // 8
    if bits == 1:
        return signs + 8
    return signs + 12 + (dim * (bits - 1) + 7) // 8 + 8


class RaBitQ(Code):
    """faiss RaBitQ at 1..9 bits per coordinate, after a seeded random rotation.

    Args:
        bits: bits per coordinate: 1 (faiss >= 1.11) or 2..9 (multi-bit, faiss >= 1.13.1).
        qb: bits per coordinate of the quantised query, 0..8 (0 = float query). Default 8: on the demo at 48
            bytes (PCA-320, 1 bit) qb=8 and the float query both gave nDCG@10 0.267, faiss's default qb=4 0.265
            (0.266 centred); experiments/rivals_probe.py.
        centered: faiss's zero-centred query quantiser (``RaBitQSearchParameters.centered``, faiss >= 1.13.0).
        out_dim: width after the random rotation; None = the input width, smaller = a random projection.
        rescore, seed: see ``Code`` (seed draws the rotation).
    """

    family = "rabitq"
    symmetric = False

    def __init__(
        self,
        bits: int = 1,
        *,
        qb: int = 8,
        centered: bool = False,
        out_dim: int | None = None,
        rescore: int | None = None,
        seed: int = 0,
    ) -> None:
        if bits not in RABITQ_BITS:
            raise EvaluationError(f"rabitq: bits must be one of {list(RABITQ_BITS)}, got {bits!r}")
        if qb not in range(9):
            raise EvaluationError(f"rabitq: qb (query bits) must be in 0..8 (0 = float query), got {qb!r}")
        if out_dim is not None and out_dim < 1:
            raise EvaluationError(f"rabitq: out_dim must be positive, got {out_dim}")
        self.bits = int(bits)
        self.qb = int(qb)
        self.centered = bool(centered)
        self.out_dim = out_dim
        super().__init__(rescore=rescore, seed=seed)
        if not hasattr(faiss, "IndexRaBitQ"):
            require_faiss(self.name, (1, 11, 0), "IndexRaBitQ")
        if self.bits > 1:
            require_faiss(self.name, (1, 13, 1), "multi-bit RaBitQ")
        if self.centered:
            require_faiss(self.name, (1, 13, 0), "RaBitQSearchParameters.centered")

    @property
    def name(self) -> str:
        return "rabitq" if self.bits == 1 else f"rabitq{self.bits}"

    def _width(self, dim: int) -> int:
        return dim if self.out_dim is None else self.out_dim

    def bytes_for_dim(self, dim: int) -> int:
        return rabitq_code_size(self._width(dim), self.bits)

    def _scoring(self) -> str:
        return f"rabitq-qb{self.qb}" + ("-centered" if self.centered else "")

    def _check_dim(self, dim: int) -> None:
        if self.out_dim is not None and self.out_dim > dim:
            raise EvaluationError(f"rabitq: out_dim {self.out_dim} is larger than the input dim {dim}")

    def _fit(self, x: np.ndarray) -> None:
        rotation = faiss.RandomRotationMatrix(x.shape[1], self._width(x.shape[1]))
        rotation.init(self.seed)
        # The three-argument constructor (bits per coordinate) only exists since faiss 1.13.1.
        rabitq = faiss.IndexRaBitQ(
            rotation.d_out, faiss.METRIC_INNER_PRODUCT, *([self.bits] if self.bits > 1 else [])
        )
        index = faiss.IndexPreTransform(rotation, rabitq)
        index.train(x)
        # IndexPreTransform does not own the parts it was built from: keep them alive with it.
        self._parts = (rotation, rabitq)
        self._index = index
        params = faiss.RaBitQSearchParameters(qb=self.qb)
        if self.centered:
            params.centered = True
        self._params = faiss.SearchParametersPreTransform(index_params=params)
        self._query_params = params  # the wrapper does not own it either

    @property
    def faiss_index(self) -> faiss.Index:
        """The trained faiss index (``"RR,RaBitQ{b}"``), e.g. for ``sa_code_size()``."""
        self._fitted_dim()
        return self._index

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return self._index.sa_encode(x)

    def _add(self, x: np.ndarray) -> None:
        self._index.reset()
        self._index.add(x)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, idx = self._index.search(queries, k, params=self._params)
        return sorted_by_score(scores, idx)

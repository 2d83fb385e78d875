"""Post-hoc quantisation of embeddings: float32, int8, int4 and binary codes, and the compression factor.

Every quantiser is calibrated on a **corpus sample only** (never on queries) and then applied unchanged to
both queries and corpus.

* ``int8`` / ``int4``: per-dimension min–max scalar quantisation with ``faiss.ScalarQuantizer`` (``QT_8bit`` /
  ``QT_4bit``, range statistic ``RS_minmax``). With ``L = 2^b - 1`` and ``vmin_d``/``vmax_d`` the
  corpus-sample range of dimension d: ``code = floor(L * clip((x - vmin_d) / (vmax_d - vmin_d), 0, 1))`` and
  ``decode(code) = vmin_d + (code + 0.5) / L * (vmax_d - vmin_d)``, so an in-range value is reconstructed
  within half a step ``(vmax_d - vmin_d) / (2 L)``; out-of-range query values are clipped.
* ``binary``: one bit per dimension, ``x_d > t_d`` with ``t_d = 0`` ("sign") or the per-dimension corpus
  median ("median", default: every bit is ~50% ones on the corpus), packed with ``np.packbits`` (dims must be
  a multiple of 8) and searched by Hamming distance.

How codes are *scored* (symmetric "deq" cosine, asymmetric, Hamming + rescoring) is chosen by the evaluator.

Compression factor: ``CF = 32 * input_dim / bits_per_vector``, where ``bits_per_vector = bits_per_dim * dim``
and ``input_dim`` is the width of the float32 concatenation being compressed (1536-d input: int8@128 = 48x,
binary@1024 = 48x, int8@64 = 96x). The quantisers' own parameters (two floats or one threshold per
dimension, shared by the whole corpus) are not counted.
"""

from __future__ import annotations

import faiss
import numpy as np

from smec.evaluation.errors import EvaluationError
from smec.evaluation.spec import BINARY_THRESHOLDS, PRECISIONS

BITS_PER_DIM = {"float32": 32, "int8": 8, "int4": 4, "binary": 1}


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of PRECISIONS, else raise EvaluationError listing the valid ones."""
    if precision not in BITS_PER_DIM:
        raise EvaluationError(f"unknown precision {precision!r}: valid precisions are {list(PRECISIONS)}")
    return precision


def bits_per_vector(precision: str, dim: int) -> int:
    """Bits stored per vector: ``BITS_PER_DIM[precision] * dim`` (32/8/4/1 bits per dimension)."""
    return BITS_PER_DIM[check_precision(precision)] * int(dim)


def compression_factor(input_dim: int, bits: int) -> float:
    """``32 * input_dim / bits``: float32 size of the ``input_dim``-d input over the stored code size."""
    if bits <= 0:
        raise EvaluationError(f"bits per vector must be positive, got {bits}")
    return 32.0 * input_dim / bits


def _as_float32(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise EvaluationError(f"{what} must be a non-empty 2-d array (n, dim), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


class ScalarQuantizer:
    """Per-dimension min–max int8 / int4 quantiser (faiss.ScalarQuantizer QT_8bit / QT_4bit).

    Args:
        bits: 8 or 4.
    Attributes (after fit): ``vmin`` (d,), ``step`` (d,) = ``(vmax - vmin) / (2^bits - 1)``, ``code_size``
    bytes.
    """

    def __init__(self, bits: int = 8) -> None:
        if bits not in (8, 4):
            raise EvaluationError(f"ScalarQuantizer bits must be 8 or 4, got {bits}")
        self.bits = bits
        self._sq: faiss.ScalarQuantizer | None = None

    def fit(self, corpus_sample: np.ndarray) -> ScalarQuantizer:
        """Calibrate per-dimension ranges on ``corpus_sample`` (n, d) float."""
        x = _as_float32(corpus_sample, "corpus_sample")
        qtype = faiss.ScalarQuantizer.QT_8bit if self.bits == 8 else faiss.ScalarQuantizer.QT_4bit
        sq = faiss.ScalarQuantizer(x.shape[1], qtype)
        sq.rangestat = faiss.ScalarQuantizer.RS_minmax
        sq.train(x)
        self._sq = sq
        trained = faiss.vector_to_array(sq.trained)
        d = x.shape[1]
        self.vmin = trained[:d].copy()
        self.step = trained[d:].copy() / (2**self.bits - 1)
        self.code_size = int(sq.code_size)
        return self

    def _fitted(self) -> faiss.ScalarQuantizer:
        if self._sq is None:
            raise EvaluationError("ScalarQuantizer is not fitted: call fit(corpus_sample) first")
        return self._sq

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float -> (n, code_size) uint8 codes (int4: two codes per byte)."""
        sq = self._fitted()
        x = _as_float32(x, "x")
        if x.shape[1] != sq.d:
            raise EvaluationError(f"x has {x.shape[1]} dims but the quantizer was fitted on {sq.d}")
        return sq.compute_codes(x)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, code_size) uint8 codes -> (n, d) float32 reconstructions (bin centres)."""
        return self._fitted().decode(np.ascontiguousarray(codes, dtype=np.uint8))


class BinaryQuantizer:
    """One bit per dimension, ``x_d > threshold_d``, packed 8 dims per byte (``np.packbits``, MSB first).

    Args:
        threshold: ``"median"`` (default; per-dimension median of the corpus sample) or ``"sign"`` (0).
    """

    def __init__(self, threshold: str = "median") -> None:
        if threshold not in BINARY_THRESHOLDS:
            raise EvaluationError(
                f"binary threshold must be one of {list(BINARY_THRESHOLDS)}, got {threshold!r}"
            )
        self.threshold = threshold
        self.thresholds: np.ndarray | None = None

    def fit(self, corpus_sample: np.ndarray) -> BinaryQuantizer:
        """Set the per-dimension thresholds from ``corpus_sample`` (n, d); d must be a multiple of 8."""
        x = _as_float32(corpus_sample, "corpus_sample")
        check_binary_dim(x.shape[1])
        if self.threshold == "median":
            self.thresholds = np.median(x, axis=0).astype(np.float32)
        else:
            self.thresholds = np.zeros(x.shape[1], dtype=np.float32)
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float -> (n, d / 8) uint8 packed bits."""
        if self.thresholds is None:
            raise EvaluationError("BinaryQuantizer is not fitted: call fit(corpus_sample) first")
        x = _as_float32(x, "x")
        if x.shape[1] != self.thresholds.size:
            raise EvaluationError(
                f"x has {x.shape[1]} dims but the quantizer was fitted on {self.thresholds.size}"
            )
        return np.packbits(x > self.thresholds, axis=1)

    @staticmethod
    def unpack_signs(codes: np.ndarray) -> np.ndarray:
        """(n, d / 8) packed bits -> (n, d) float32 in {-1, +1}; ``<a, b> = d - 2 * hamming(a, b)``."""
        return np.unpackbits(codes, axis=1).astype(np.float32) * 2.0 - 1.0


def check_binary_dim(dim: int) -> None:
    """Raise EvaluationError unless ``dim`` is a positive multiple of 8 (bits are packed by bytes)."""
    if dim <= 0 or dim % 8:
        raise EvaluationError(f"binary precision needs a dim that is a multiple of 8, got {dim}")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))

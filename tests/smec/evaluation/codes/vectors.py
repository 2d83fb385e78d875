"""Helpers of the code tests: tiny deterministic vectors and a brute-force top k."""

from __future__ import annotations

import numpy as np

from smec.evaluation.quantize import l2_normalize


def make_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n, dim) L2-normalised rows with decaying per-dimension scales (some directions matter more)."""
    rng = np.random.default_rng(seed)
    return l2_normalize(
        rng.standard_normal((n, dim)).astype(np.float32) * np.linspace(2.0, 0.2, dim, dtype=np.float32)
    )


def brute_force(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of a full (nq, nc) score matrix: score descending, ties by row ascending."""
    order = np.lexsort((np.broadcast_to(np.arange(scores.shape[1]), scores.shape), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), order.astype(np.int64)

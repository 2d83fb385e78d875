"""Seeded row samples: the one rule every fit on "a sample of the corpus" draws its rows by.

The evaluator's quantiser calibration, the training-free baselines (PCA, rotation, OPQ + PQ), the codes of
``smec.evaluation.codes`` and MRL's PCA initialisation each fit on a seeded sample of rows. They all draw it here,
so the same (rows, size, seed) always means the same rows, whichever of them asks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_rows"]


def sample_rows(n: int, size: int | None, seed: int = 0) -> np.ndarray:
    """Indices of ``size`` of ``n`` rows, drawn without replacement by ``numpy.random.default_rng(seed)``, sorted.

    Every row (``arange(n)``) when ``size`` is None or at least ``n``: a sample as large as the set is the set.
    """
    if size is None or size >= n:
        return np.arange(n)
    if size < 1:
        raise ValueError(f"a row sample needs at least 1 row, got {size}")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))

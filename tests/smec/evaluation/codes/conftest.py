"""Fixtures of the code tests: a 600 x 32 corpus and 20 noisy queries (see vectors.py)."""

from __future__ import annotations

import numpy as np
import pytest

from smec.evaluation.quantize import l2_normalize
from tests.smec.evaluation.codes.vectors import make_vectors


@pytest.fixture
def corpus() -> np.ndarray:
    return make_vectors(600, 32)


@pytest.fixture
def queries(corpus) -> np.ndarray:
    rng = np.random.default_rng(1)
    return l2_normalize(corpus[:20] + 0.3 * rng.standard_normal((20, 32)).astype(np.float32))

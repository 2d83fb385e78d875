"""Seeded row samples: the one rule every fit on "a sample of the corpus" draws its rows by.

The evaluator's quantiser calibration, the training-free baselines (PCA, rotation, OPQ + PQ), the codes of
``smec.evaluation.codes`` and MRL's PCA initialisation each fit on a seeded sample of rows. They all draw it here,
so the same (rows, size, seed) always means the same rows, whichever of them asks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["corpus_sample", "sample_rows"]


def sample_rows(n: int, size: int | None, seed: int = 0) -> np.ndarray:
    """Indices of ``size`` of ``n`` rows, drawn without replacement by ``numpy.random.default_rng(seed)``, sorted.

    Every row (``arange(n)``) when ``size`` is None or at least ``n``: a sample as large as the set is the set.
    """
    if size is None or size >= n:
        return np.arange(n)
    if size < 1:
        raise ValueError(f"a row sample needs at least 1 row, got {size}")
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def corpus_sample(datamodule: Any, size: int | None, device: Any = None, seed: int = 0) -> torch.Tensor:
    """A seeded sample (:func:`sample_rows`) of the corpus rows of an EmbeddingDataModule's input (float32,
    on ``device``).

    The rows a fit sees, as its model sees them: the store's concatenation with the data's normalisation and
    model weights. For initialisations fitted on training data (SMEC's ``smrl.init: pca``, ``ads.init:
    variance``)."""
    dm = datamodule
    corpus = dm.store.concat(dm.model_keys, "corpus", dm.normalization, dm.model_weights)
    rows = np.asarray(corpus.take(sample_rows(len(corpus), size, seed)), dtype=np.float32)
    return torch.from_numpy(rows).to(device)

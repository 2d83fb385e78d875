"""A deterministic, model-free encoder plug-in for tests: ``tests.datamodules.fake_encoder:make``.

Each text maps to a vector seeded by its sha256, so any process gives the same bytes. ``SMEC_FAKE_DELAY``
(seconds per encode call) slows it down so a test can kill a run midway; a text containing "NaN!" encodes to
NaN, to test how bad encoder output is refused.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np


class HashEncoder:
    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.spec = "fake"

    def _encode(self, texts, side: str) -> np.ndarray:
        time.sleep(float(os.environ.get("SMEC_FAKE_DELAY", "0")))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(f"{side}:{t}".encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self.dim))
            if "NaN!" in t:
                rows[-1][0] = np.nan
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dim)

    def encode_queries(self, texts, batch_size: int = 64) -> np.ndarray:
        return self._encode(texts, "q")

    def encode_documents(self, texts, batch_size: int = 64) -> np.ndarray:
        return self._encode(texts, "d")


def make(dim: int = 8) -> HashEncoder:
    return HashEncoder(dim)

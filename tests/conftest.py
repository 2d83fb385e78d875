"""Shared fixtures: tiny deterministic stores built on the fly (no models, no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Test tensors are tiny: one thread avoids OpenMP spin-waits that make them crawl on a busy 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def build_store(
    path: Path,
    *,
    n_corpus: int = 100,
    splits: dict[str, int] | None = None,
    dims: dict[str, int] | None = None,
    dtype: str = "float32",
    shard_rows: int | dict[str, int] = 16,
    seed: int = 0,
) -> Path:
    """A store whose rows are recognisable: column 0 of every model holds the row's index in its text set.

    Query i of each split is relevant to document (7 * i) % n_corpus, so supervised pairs are checkable.
    """
    from datamodules.store.writer import StoreWriter, TextSetSpec

    splits = splits if splits is not None else {"train": 40, "dev": 10, "test": 12}
    dims = dims if dims is not None else {"m1": 6, "m2": 4}
    ids = {"corpus": [f"d{i}" for i in range(n_corpus)]}
    qrels = {}
    for split, n in splits.items():
        ids[f"queries/{split}"] = [f"{split}-q{i}" for i in range(n)]
        qrels[split] = {f"{split}-q{i}": {f"d{(7 * i) % n_corpus}": 1} for i in range(n)}
    writer = StoreWriter(
        path,
        dataset="tiny",
        fingerprint=f"tiny-{seed}",
        text_sets=[TextSetSpec(k, v) for k, v in ids.items()],
        qrels=qrels,
    )
    rng = np.random.default_rng(seed)
    for model, dim in dims.items():
        for ts, row_ids in ids.items():
            data = rng.standard_normal((len(row_ids), dim)).astype(np.float32)
            data[:, 0] = np.arange(len(row_ids))
            writer.write(
                model,
                ts,
                dim=dim,
                encode=lambda s, e, d=data: d[s:e],
                model_info={"spec": model},
                dtype=dtype,
                shard_rows=shard_rows[model] if isinstance(shard_rows, dict) else shard_rows,
            )
    return path


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    return build_store(tmp_path / "store")

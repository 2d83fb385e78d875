"""Uncertainty of retrieval scores: standard errors and paired differences over queries, bootstrap intervals over
seeds, "0.284 ± 0.007"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from smec.evaluation.errors import EvaluationError


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean, ``std(values, ddof=1) / sqrt(n)``; NaN for fewer than 2 values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float("nan")
    return float(values.std(ddof=1) / math.sqrt(values.size))


def paired_difference(
    row_a: Mapping[str, Any], row_b: Mapping[str, Any], metric: str = "ndcg@10"
) -> tuple[float, float]:
    """Mean of ``a - b`` over the same queries and its paired standard error.

    Args:
        row_a, row_b: evaluator rows carrying ``per_query[metric]`` arrays and ``query_ids`` (rows from one
            RetrievalEvaluator, or read back with results.read_results, share them).
        metric: a per-query measure name, default ``"ndcg@10"``.
    Returns:
        ``(mean(a - b), standard_error(a - b))``. The paired SE is much smaller than either row's SE when the
        two systems agree on which queries are hard.
    """
    for name, row in (("row_a", row_a), ("row_b", row_b)):
        if metric not in row.get("per_query", {}) or "query_ids" not in row:
            raise EvaluationError(
                f"{name} has no per-query {metric!r} values (rows need 'per_query' and 'query_ids')"
            )
    ids_a, ids_b = row_a["query_ids"], row_b["query_ids"]
    if ids_a is not ids_b and list(ids_a) != list(ids_b):
        raise EvaluationError(
            "rows were scored on different queries: a paired difference needs the same query ids"
        )
    diff = np.asarray(row_a["per_query"][metric], dtype=np.float64) - np.asarray(
        row_b["per_query"][metric], dtype=np.float64
    )
    return float(diff.mean()), standard_error(diff)


def format_mean_se(mean: float, se: float, digits: int = 3) -> str:
    """``format_mean_se(0.28412, 0.0071) == "0.284 ± 0.007"``; a NaN SE prints as the mean alone."""
    if math.isnan(se):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def seed_bootstrap_interval(
    a: Sequence[float],
    b: Sequence[float],
    *,
    paired: bool = False,
    draws: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile interval of ``mean(a) - mean(b)`` with the seeds resampled with replacement.

    Args:
        a, b: one score per seed of each system (each seed's mean over the same queries).
        paired: resample seed pairs (``a[i]`` with ``b[i]``: the same seeds, in the same order); otherwise each
            side's seeds are resampled on their own.
        draws, level, seed: bootstrap draws, interval coverage, the generator's seed (same inputs, same interval).
    Returns:
        ``(low, high)``; None when either side has fewer than 2 seeds (there is no seed variation to resample).
    """
    a_values, b_values = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_values.size < 2 or b_values.size < 2:
        return None
    if paired and a_values.size != b_values.size:
        raise EvaluationError(f"paired seeds need as many of each: {a_values.size} vs {b_values.size}")
    rng = np.random.default_rng(seed)
    pick_a = rng.integers(0, a_values.size, size=(draws, a_values.size))
    pick_b = pick_a if paired else rng.integers(0, b_values.size, size=(draws, b_values.size))
    means = a_values[pick_a].mean(axis=1) - b_values[pick_b].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)

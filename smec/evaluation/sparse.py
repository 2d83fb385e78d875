"""The grid's rows of a sparse system (CSR, docs/methods.md#csr): k-sparse codes of a width-H dictionary.

A k-sparse row stores k indices of ⌈log2 H⌉ bits and k values at the row's precision
(:func:`sparse_bits`), so ``bits`` and ``compression`` are the code's true size, not H × bits per value.
Inner products of the sparse vectors are computed as dense ones (exact). Per precision:

* ``float32``: the L2-normalised code, scored by inner product (``"sparse-ip"``);
* ``int8`` / ``int4``: each stored value (non-negative) uniformly quantised on [0, v_max], v_max the largest
  value of a corpus sample; 0 stays 0 (a value is never moved off or onto the support); decoded, renormalised
  and scored by inner product, queries quantised too unless the evaluator scores int codes asymmetrically
  (``"sparse-deq-sym"`` / ``"sparse-deq-asym"``);
* ``binary``: the support alone (0 value bits): each stored index counts 1, so a score is the overlap of the two
  supports over k (``"sparse-support"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smec.evaluation.calibration import calibration_positions
from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.quantize import check_precision, l2_normalize
from smec.evaluation.search import search_inner_product

__all__ = ["VALUE_BITS", "dequantize_values", "evaluate_sparse", "sparse_bits"]

VALUE_BITS = {"float32": 32, "int8": 8, "int4": 4, "binary": 0}
"""Bits of one stored value per precision (binary: the support only)."""


def sparse_bits(k: int, width: int, precision: str) -> int:
    """Bits of one k-sparse row of a width-``width`` dictionary: k · (⌈log2 width⌉ + value bits)."""
    index_bits = max(1, math.ceil(math.log2(int(width))))
    return int(k) * (index_bits + VALUE_BITS[check_precision(precision)])


def dequantize_values(x: np.ndarray, precision: str, v_max: float) -> np.ndarray:
    """``x``'s non-negative values as stored at ``precision`` and decoded (zeros stay zero)."""
    if precision == "float32":
        return x
    if precision == "binary":
        return (x > 0).astype(np.float32)
    levels = 2 ** VALUE_BITS[precision] - 1
    step = v_max / levels if v_max > 0 else 1.0
    return (np.clip(np.rint(x / step), 0, levels) * step).astype(np.float32)


def evaluate_sparse(
    evaluator: RetrievalEvaluator,
    method: str,
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    precisions: Sequence[str],
    bits: Any,
    run_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """The rows of one sparsity level: ``queries`` (nq, H), ``corpus`` (nc, H) with <= k non-zeros per row.

    ``bits(k, precision)`` is the stored size of a row (the system's ``storage_bits``); rows carry ``dim`` = k.
    """
    queries, corpus = np.asarray(queries, dtype=np.float32), np.asarray(corpus, dtype=np.float32)
    if (queries < 0).any() or (corpus < 0).any():
        raise EvaluationError(f"{method}: sparse codes must be non-negative")
    perm = np.argsort(evaluator.qrels.tie_rank)  # doc-id-descending, as the evaluator: trec_eval's ties
    q, c = l2_normalize(queries), l2_normalize(corpus[perm])
    settings = evaluator.settings
    positions = calibration_positions(
        evaluator.qrels.tie_rank, settings["calibration_size"], settings["seed"]
    )
    v_max = float((c if positions is None else c[positions]).max())
    rows = []
    for precision in precisions:
        start = time.perf_counter()
        c_p = l2_normalize(dequantize_values(c, precision, v_max))
        symmetric = precision == "binary" or evaluator.int_scoring == "symmetric" or precision == "float32"
        q_p = l2_normalize(dequantize_values(q, precision, v_max)) if symmetric else q
        scores, idx = search_inner_product(q_p, c_p, evaluator.k, backend=evaluator.backend)
        scoring = {"float32": "sparse-ip", "binary": "sparse-support"}.get(
            precision, "sparse-deq-sym" if symmetric else "sparse-deq-asym"
        )
        row = evaluator.score_ranking(
            method,
            k,
            precision,
            int(bits(k, precision)),
            scores,
            np.where(idx < 0, -1, perm[np.maximum(idx, 0)]),
            scoring=scoring,
            run_dir=run_dir,
            elapsed=time.perf_counter() - start,
        )
        row["family"] = "sparse"
        rows.append(row)
    return rows

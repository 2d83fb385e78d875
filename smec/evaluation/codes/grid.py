"""How the evaluator's grid runs a code: one (method output, dim, code) -> one result row.

The grid hands over a method's (n, D) float vectors, as it does for the float/int/binary precisions; this
module takes the prefix (or the ADS column set), L2-normalises it, fits the code on a seeded corpus sample,
indexes the corpus, searches and scores the run with ``RetrievalEvaluator.score_ranking``. The row is the
evaluator's usual row with ``precision`` = the code's name, ``bits = 8 * bytes_per_vector`` (so ``compression``
is ``32 * input_dim / bits``, from the true stored bytes) and the code's fields added:

    family, code, symmetric, bytes, extra_bytes (rescoring's float32 corpus, 0 without), rescore, fit_s

Which dim a code gets at a budget is ``dim_for_budget`` (codes.__init__).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smec.evaluation.codes.base import Code
from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.quantize import l2_normalize
from smec.evaluation.spec import EvaluationSpec
from smec.sampling import sample_rows


def evaluate_code(
    evaluator: RetrievalEvaluator,
    code: Code,
    method: str,
    queries: np.ndarray,
    corpus: np.ndarray,
    dim: int | None = None,
    *,
    columns: Sequence[int] | None = None,
    fit_sample_size: int | None = EvaluationSpec.calibration_size,
    seed: int = EvaluationSpec.seed,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Fit ``code`` on a corpus sample of ``method``'s vectors at ``dim`` and score it: one result row.

    Args:
        evaluator: built on the split's ids and qrels (``input_dim`` = width of the float32 input).
        code: an unfitted (or refittable) code; it is fitted here.
        queries, corpus: (nq, D), (nc, D) float, rows aligned with the evaluator's ids.
        dim: prefix width (default D); columns: explicit column indices instead (ADS), ``dim`` = their count.
        fit_sample_size, seed: corpus rows the code is fitted on (seeded sample, :func:`smec.sampling.sample_rows`;
            all rows if fewer, or None): the spec's ``calibration_size`` and ``seed``.
        run_dir: if given, the TREC run ``<method>.<dim>.<code>.trec``.
    """
    queries, corpus = np.asarray(queries), np.asarray(corpus)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise EvaluationError(
            f"queries and corpus must be 2-d with the same width, got {queries.shape} and {corpus.shape}"
        )
    width = corpus.shape[1]
    if columns is not None:
        cols = np.asarray(columns, dtype=np.int64)
        dim = cols.size
    else:
        dim = width if dim is None else int(dim)
        if not 1 <= dim <= width:
            raise EvaluationError(f"dim {dim} must be between 1 and the input dim {width}")
        cols = np.arange(dim)
    start = time.perf_counter()
    # Corpus rows in doc-id-descending order, as the evaluator does: ties broken by row = trec_eval's order.
    perm = np.argsort(evaluator.qrels.tie_rank)
    q = l2_normalize(queries[:, cols])
    c = l2_normalize(corpus[np.ix_(perm, cols)])
    fit_start = time.perf_counter()
    code.fit(c[sample_rows(c.shape[0], fit_sample_size, seed)])
    fit_s = time.perf_counter() - fit_start
    code.index(c)
    scores, idx = code.search(q, evaluator.k)
    idx = np.where(idx < 0, -1, perm[np.maximum(idx, 0)])
    row = evaluator.score_ranking(
        method,
        dim,
        code.name,
        8 * code.bytes_per_vector,
        scores,
        idx,
        scoring=code.scoring,
        run_dir=run_dir,
        elapsed=time.perf_counter() - start,
    )
    info = code.describe()
    row.update(
        family=info["family"],
        code=info["code"],
        symmetric=info["symmetric"],
        bytes=info["bytes"],
        extra_bytes=info["extra_bytes"],
        rescore=info["rescore"],
        fit_s=round(fit_s, 3),
    )
    return row

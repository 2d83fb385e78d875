"""How the evaluator's grid runs a code: one (method output, dim, code) -> one result row.

The grid hands over a method's (n, D) float vectors, as it does for the float/int/binary precisions; this
module takes the prefix (or the ADS column set), L2-normalises it, fits the code on a seeded corpus sample,
indexes the corpus, searches and scores the run with ``RetrievalEvaluator.score_ranking``. The row is the
evaluator's usual row with ``precision`` = the code's name, ``bits = 8 * bytes_per_vector`` (so ``compression``
is ``32 * input_dim / bits``, from the true stored bytes) and the code's fields added:

    family, code, symmetric, bytes, extra_bytes (rescoring's float32 corpus, 0 without), rescore, fit_s

    budget_bytes (the grid budget the row was made for: its bytes are at most that)

Which codes a grid runs and where: :func:`code_rows` (a representation whose prefixes are its sizes: the
baselines, prefix-nested systems, a store's compressed models) and :func:`plan_codes` + :func:`evaluate_planned`
(a system whose sizes are separate vectors: SMEC's chain). The budgets are the bytes per vector the grid's own
rows reach (:func:`grid_budgets`: dims x bits of each precision) at :data:`CODE_MIN_COMPRESSION` or more; at each
budget a code gets the widest input that fits (``dim_for_budget``; for separate sizes, the widest size that
fits), and a row already made at a smaller budget (same code, dim and bytes) is not made again. A code sized by
the budget itself (RQ / LSQ without ``m``: M codebooks = the budget's bytes, :meth:`Code.for_budget`) makes one
row per budget, labelled ``<code>-<budget>B`` (``rq-48B``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smec.evaluation.codes.base import Code
from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.quantize import BITS_PER_DIM, l2_normalize
from smec.evaluation.spec import CodeSpec, EvaluationSpec
from smec.sampling import sample_rows

CODE_MIN_COMPRESSION = 24.0
"""Codes run at the grid's budgets of at least this compression (below it every method keeps ~100%, and the
codes' fits cost most there): 192 bytes and less for the demo's 1152-d input."""


def grid_budgets(
    dims: Sequence[int],
    precisions: Sequence[str],
    input_dim: int,
    min_compression: float = CODE_MIN_COMPRESSION,
) -> list[int]:
    """The bytes per vector the grid's rows reach (``dim`` x bits of each precision, whole bytes), ascending,
    those compressing ``input_dim`` float32 by at least ``min_compression``.

    >>> grid_budgets([48, 96], ["float32", "int8", "binary"], 1152)
    [6, 12, 48, 96, 192]
    """
    bits = {BITS_PER_DIM[p] * int(d) for d in dims for p in precisions if p in BITS_PER_DIM}
    return sorted(b // 8 for b in bits if b % 8 == 0 and 32 * input_dim / b >= min_compression)


@dataclass(frozen=True)
class PlannedCode:
    """One row to make: ``spec`` at input width ``dim`` for the grid budget ``budget`` (bytes), labelled
    ``precision`` (the spec's; with ``-<budget>B`` for a code the budget sizes, as RQ's M codebooks)."""

    spec: CodeSpec
    budget: int
    dim: int
    precision: str

    def build(self) -> Code:
        """The code of this row: the spec's, sized to the budget (:meth:`Code.for_budget`)."""
        code = self.spec.build().for_budget(self.budget)
        assert code is not None, "plan_codes plans reachable budgets only"
        return code


def plan_codes(
    codes: Sequence[CodeSpec],
    method: str,
    budgets: Sequence[int],
    widths: Sequence[int] | int,
    dropped: list[str],
) -> list[PlannedCode]:
    """The code rows of ``method``: each code of ``codes`` that runs on it, at each budget it reaches.

    Args:
        budgets: the grid's budgets (bytes), used by codes without their own ``budgets``.
        widths: an int W: the method's output is prefix-nested, any prefix up to W is a size; a list: the
            method's sizes (separate vectors, each coded whole).
        dropped: budgets a code does not reach (even its narrowest input is too many bytes) are noted here.
    """
    plan: list[PlannedCode] = []
    for spec in codes:
        if not spec.runs_on(method):
            continue
        code = spec.build()
        missed, done = [], set()
        for budget in spec.budgets if spec.budgets is not None else sorted(budgets):
            sized = code.for_budget(budget)
            dim = None if sized is None else _widest(sized, budget, widths, spec.max_dim)
            if sized is None or dim is None:
                missed.append(budget)
            elif (key := (dim, sized.bytes_for_dim(dim))) not in done:
                done.add(key)
                label = spec.precision if sized is code else f"{spec.precision}-{budget}B"
                plan.append(PlannedCode(spec, budget, dim, label))
        if missed:
            dropped.append(
                f"{method} + {spec.precision} at {missed} bytes (its narrowest input does not fit)"
            )
    return plan


def _widest(code: Code, budget: int, widths: Sequence[int] | int, max_dim: int | None) -> int | None:
    if isinstance(widths, int):
        from smec.evaluation.codes import dim_for_budget

        return dim_for_budget(code, budget, min(widths, max_dim or widths))
    fit = [w for w in widths if (max_dim is None or w <= max_dim) and code.bytes_for_dim(w) <= budget]
    return max(fit) if fit else None


def evaluate_planned(
    evaluator: RetrievalEvaluator,
    planned: PlannedCode,
    method: str,
    queries: np.ndarray,
    corpus: np.ndarray,
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """The row of one planned code on ``method``'s (n, D) output (its prefix of ``planned.dim`` dims), fitted on
    the evaluator's calibration sample."""
    settings = evaluator.settings
    row = evaluate_code(
        evaluator,
        planned.build(),
        method,
        queries,
        corpus,
        planned.dim,
        fit_sample_size=settings["calibration_size"],
        seed=settings["seed"],
        run_dir=run_dir,
        precision=planned.precision,
    )
    row["budget_bytes"] = planned.budget
    return row


def code_rows(
    evaluator: RetrievalEvaluator,
    codes: Sequence[CodeSpec],
    method: str,
    queries: np.ndarray,
    corpus: np.ndarray,
    budgets: Sequence[int],
    *,
    run_dir: Path | None = None,
    dropped: list[str],
) -> list[dict[str, Any]]:
    """Every code of ``codes`` that runs on ``method`` on top of its prefix-nested (n, D) output, at each budget
    it reaches (:func:`plan_codes` with widths D)."""
    plan = plan_codes(codes, method, budgets, int(np.shape(corpus)[1]), dropped)
    return [evaluate_planned(evaluator, p, method, queries, corpus, run_dir) for p in plan]


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
    precision: str | None = None,
) -> dict[str, Any]:
    """Fit ``code`` on a corpus sample of ``method``'s vectors at ``dim`` and score it: one result row.

    Args:
        evaluator: built on the split's ids and qrels (``input_dim`` = width of the float32 input).
        code: an unfitted (or refittable) code; it is fitted here.
        queries, corpus: (nq, D), (nc, D) float, rows aligned with the evaluator's ids.
        dim: prefix width (default D); columns: explicit column indices instead (ADS), ``dim`` = their count.
        fit_sample_size, seed: corpus rows the code is fitted on (seeded sample, :func:`smec.sampling.sample_rows`;
            all rows if fewer, or None): the spec's ``calibration_size`` and ``seed``.
        run_dir: if given, the TREC run ``<method>.<dim>.<precision>.trec``.
        precision: the row's label (default: the code's name).
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
        precision or code.name,
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

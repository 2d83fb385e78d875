"""Writing and reading evaluation results: results.json, markdown tables, TREC run files.

A *row* is the evaluator's dict: ``method, dim, precision, bits, compression, scoring, ndcg@10, ndcg@10_se,
recall@100, mrr@10, n_queries, time_s`` and, in memory, ``per_query`` (measure -> per-query array) and
``query_ids`` (the scored queries, one list shared by all rows of an evaluator).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smec.evaluation.errors import EvaluationError
from smec.evaluation.quantize import PRECISIONS
from smec.evaluation.stats import format_mean_se
from smec.machine import machine_info

RESULTS_FORMAT_VERSION = 1
_PER_QUERY_KEYS = ("per_query", "query_ids")


def run_file_name(method: str, dim: int, precision: str) -> str:
    """``<method>.<dim>.<precision>.trec`` with characters outside ``[A-Za-z0-9_.-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{method}.{dim}.{precision}") + ".trec"


_WHITESPACE = re.compile(r"\s")


def check_trec_ids(ids: Sequence[str], what: str, path: Path) -> None:
    """Refuse ids a TREC run cannot hold: fields are whitespace-separated, so an id must be one non-empty token."""
    joined = "".join(ids)
    if _WHITESPACE.search(joined) is None and all(ids):
        return
    bad = next(i for i in ids if not i or _WHITESPACE.search(i))
    raise EvaluationError(
        f"{path}: cannot write {what} id {bad!r} into a TREC run (ids must be non-empty and without whitespace); "
        "fix the ids in the dataset and re-run `smec embed`"
    )


def write_trec_run(
    path: Path,
    query_ids: Sequence[str],
    corpus_ids: Sequence[str],
    scores: np.ndarray,
    indices: np.ndarray,
    tag: str,
) -> Path:
    """Write a standard 6-column TREC run: ``qid Q0 docid rank score tag``.

    Args:
        query_ids: one per row of ``scores``/``indices``; corpus_ids: what ``indices`` refer to.
        scores, indices: (nq, k), each row already in rank order (rank 1 first); index -1 = empty slot,
            skipped.
        tag: run tag (whitespace replaced by ``_``).
    Scores are written with 9 significant digits, enough to round-trip float32, so trec_eval re-ranks the file
    exactly as it was ranked here. An id that is empty or holds whitespace would shift the columns: it is
    refused (:class:`EvaluationError`) before the file is opened.
    """
    tag = re.sub(r"\s+", "_", tag)
    path = Path(path)
    check_trec_ids(query_ids, "query", path)
    check_trec_ids(corpus_ids, "document", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for qid, row_s, row_i in zip(query_ids, scores, indices):
            rank = 0
            for s, j in zip(row_s.tolist(), row_i.tolist()):
                if j < 0:
                    continue
                rank += 1
                fh.write(f"{qid} Q0 {corpus_ids[j]} {rank} {s:.9g} {tag}\n")
    return path


def _jsonable(row: Mapping[str, Any], include_per_query: bool) -> dict[str, Any]:
    # NaN (e.g. the SE of a single query) is not valid JSON: write null.
    out = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in row.items()
        if k not in _PER_QUERY_KEYS
    }
    if include_per_query and "per_query" in row:
        out["per_query"] = {
            m: np.asarray(v, dtype=float).round(6).tolist() for m, v in row["per_query"].items()
        }
    return out


def write_results(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    dataset: str,
    split: str,
    base_models: Sequence[str],
    input_dim: int,
    metadata: Mapping[str, Any] | None = None,
    include_per_query: bool = True,
) -> Path:
    """Write ``results.json``: ``{"format", "metadata", "query_ids", "rows"}``.

    Args:
        path: a ``.json`` file, or a directory (then ``<path>/results.json``).
        rows: evaluator rows. With ``include_per_query`` (default) each row keeps its per-query values
            (rounded to 1e-6) and the file stores the scored query ids once, so paired differences can be
            computed after reading it back; all rows must then share the same query ids.
        dataset, split, base_models, input_dim: run metadata; ``metadata``: any extra JSON-able fields.
            The CPU and kernel libraries (:func:`smec.machine.machine_info`) are recorded as ``machine``:
            rows are reproducible on one machine, not across CPUs.
    """
    path = Path(path)
    if path.suffix != ".json":
        path = path / "results.json"
    query_ids: list[str] | None = None
    if include_per_query:
        for row in rows:
            if "query_ids" not in row:
                continue
            if query_ids is None:
                query_ids = list(row["query_ids"])
            elif row["query_ids"] is not query_ids and list(row["query_ids"]) != query_ids:
                raise EvaluationError(
                    "rows were scored on different queries: write them with include_per_query=False"
                )
    meta = {
        "dataset": dataset,
        "split": split,
        "base_models": list(base_models),
        "input_dim": int(input_dim),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        **dict(metadata or {}),
    }
    # One row per line (per-query lists inline) keeps the file diffable and short; it is still plain JSON.
    body = ",\n  ".join(json.dumps(_jsonable(r, include_per_query)) for r in rows)
    text = (
        f'{{"format": {RESULTS_FORMAT_VERSION},\n "metadata": {json.dumps(meta)},\n'
        f' "query_ids": {json.dumps(query_ids)},\n "rows": [\n  {body}\n ]}}\n'
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def read_results(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read a results.json: ``(rows, metadata)``; per-query values become arrays sharing one id list."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read results file {path}: {exc}") from exc
    if not isinstance(doc, dict) or "rows" not in doc or "metadata" not in doc:
        raise EvaluationError(f"{path} is not a results.json (expected keys 'metadata' and 'rows')")
    query_ids = doc.get("query_ids")
    rows = []
    for row in doc["rows"]:
        if "per_query" in row and query_ids is not None:
            row["per_query"] = {m: np.asarray(v, dtype=np.float64) for m, v in row["per_query"].items()}
            row["query_ids"] = query_ids
        rows.append(row)
    return rows, doc["metadata"]


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _find(rows: Sequence[Mapping[str, Any]], key: tuple[str, int, str]) -> Mapping[str, Any]:
    for row in rows:
        if (row["method"], row["dim"], row["precision"]) == key:
            return row
    raise EvaluationError(f"reference row {key} not found among the rows")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    metric: str = "ndcg@10",
    reference: Mapping[str, Any] | tuple[str, int, str] | None = None,
    digits: int = 3,
) -> str:
    """One table line per (method, dim, precision): bits, compression, ``metric ± SE`` and % of a reference.

    Args:
        rows: evaluator rows; listed with methods in first-appearance order, then dim, then precision in
            (float32, int8, int4, binary, others) order.
        metric: the column to report; its SE is read from ``<metric>_se`` when present.
        reference: a row, or ``(method, dim, precision)`` of one of ``rows``; adds a "% of ref" column
            ``100 * value / reference value``.
    """
    if isinstance(reference, tuple):
        reference = _find(rows, reference)
    ref_value = None if reference is None else float(reference[metric])
    method_order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}
    prec_order = {p: i for i, p in enumerate(PRECISIONS)}

    def key(r: Mapping[str, Any]):
        return (
            method_order[r["method"]],
            r["dim"],
            prec_order.get(r["precision"], len(PRECISIONS)),
            r["precision"],
        )

    header = ["method", "dim", "precision", "bits", "CF", f"{metric} ± SE"]
    if ref_value is not None:
        ref_name = f"{reference['method']}@{reference['dim']}/{reference['precision']}"
        header.append(f"% of {ref_name}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(rows, key=key):
        cells = [
            str(r["method"]),
            str(r["dim"]),
            str(r["precision"]),
            str(r.get("bits", "")),
            f"{r['compression']:.3g}x" if "compression" in r else "",
            format_mean_se(float(r[metric]), _float_or_nan(r.get(f"{metric}_se")), digits),
        ]
        if ref_value is not None:
            cells.append(f"{100 * float(r[metric]) / ref_value:.1f}%" if ref_value else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

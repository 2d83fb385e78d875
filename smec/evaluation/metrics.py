"""Rank metrics (nDCG@k, Recall@k, MRR@k), vectorised, computed exactly as trec_eval / pytrec_eval do.

Conventions, all taken from trec_eval 9.x (the engine inside pytrec_eval):

* **Ordering.** Each query's retrieved documents are sorted by score descending; ties are broken by document
  id in *descending* string order (trec_eval's ``strcmp(docno2, docno1)``). The order the run lists them in is
  ignored.
* **nDCG@k** (``ndcg_cut.k``): gain = the judged relevance grade (linear; grades <= 0 give no gain), discount
  ``1 / log2(rank + 1)`` for rank = 1, 2, ...; ``DCG@k = sum_{r <= k} gain_r / log2(r + 1)``. The ideal DCG@k
  uses the query's judged grades > 0 sorted descending, *including judged documents that are not in the
  corpus*. ``nDCG@k = DCG@k / IDCG@k`` (0 when IDCG is 0).
* **Recall@k** (``recall.k``): relevant retrieved in the top k / all judged relevant (grade >= 1); 0 when the
  query has no relevant document.
* **MRR@k**: ``1 / rank`` of the first relevant (grade >= 1) document within the top k, else 0. (trec_eval's
  ``recip_rank`` has no cut-off; this is ``recip_rank`` on the run truncated to k after the ordering above.)
* **Queries.** A query in the run with no qrels entry at all is skipped, as trec_eval skips it. A query that
  has qrels entries but no relevant document gets 0 for every metric and counts in the mean (pytrec_eval's
  per-query output); ``no_relevant="skip"`` drops such queries instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from smec.evaluation.errors import EvaluationError

METRIC_NAMES = ("ndcg", "recall", "mrr")
NO_RELEVANT_POLICIES = ("zero", "skip")
DEFAULT_MEASURES = ("ndcg@10", "recall@100", "mrr@10")


def parse_measure(measure: str) -> tuple[str, int]:
    """Split ``"ndcg@10"`` into ``("ndcg", 10)``; raise EvaluationError for anything else."""
    name, sep, cut = measure.partition("@")
    if not sep or name not in METRIC_NAMES or not cut.isdigit() or int(cut) < 1:
        raise EvaluationError(
            f"unknown measure {measure!r}: expected '<name>@<k>' with name in {list(METRIC_NAMES)} and k >= 1"
        )
    return name, int(cut)


class Qrels:
    """Graded relevance judgments aligned to fixed lists of query ids and corpus ids, for vectorised lookups.

    Args:
        qrels: ``{query_id: {doc_id: grade}}`` (integer grades, e.g. 0/1/2/3).
        query_ids: the queries, in the row order of every run scored against this object.
        corpus_ids: the documents, in the column order that run doc indices refer to (unique).

    Judged documents missing from ``corpus_ids`` cannot be retrieved but still count as relevant (in recall's
    denominator and in the ideal DCG), exactly as trec_eval counts them.
    """

    def __init__(
        self, qrels: Mapping[str, Mapping[str, int]], query_ids: Sequence[str], corpus_ids: Sequence[str]
    ) -> None:
        self.query_ids = list(query_ids)
        self.corpus_ids = list(corpus_ids)
        n_docs = len(self.corpus_ids)
        doc_pos = {doc: j for j, doc in enumerate(self.corpus_ids)}
        if len(doc_pos) != n_docs:
            raise EvaluationError(f"corpus_ids contain duplicates ({n_docs - len(doc_pos)} repeated ids)")
        # trec_eval breaks score ties by docno descending: rank every corpus row in that order once.
        desc_order = sorted(range(n_docs), key=self.corpus_ids.__getitem__, reverse=True)
        self.tie_rank = np.empty(n_docs, dtype=np.int64)
        self.tie_rank[desc_order] = np.arange(n_docs)

        n_q = len(self.query_ids)
        self.judged = np.zeros(n_q, dtype=bool)
        self.n_relevant = np.zeros(n_q, dtype=np.int64)
        keys: list[int] = []
        grades: list[int] = []
        positive: list[list[int]] = []
        for i, qid in enumerate(self.query_ids):
            judgments = qrels.get(qid)
            pos_grades: list[int] = []
            if judgments is not None:
                self.judged[i] = True
                for doc, grade in judgments.items():
                    grade = int(grade)
                    if grade > 0:
                        pos_grades.append(grade)
                    j = doc_pos.get(doc)
                    if j is not None and grade != 0:
                        keys.append(i * n_docs + j)
                        grades.append(grade)
            self.n_relevant[i] = len(pos_grades)
            positive.append(sorted(pos_grades, reverse=True))
        order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
        self._keys = np.asarray(keys, dtype=np.int64)[order]
        self._grades = np.asarray(grades, dtype=np.int64)[order]
        width = max((len(p) for p in positive), default=0)
        # Ideal gains per query, sorted descending and zero-padded: IDCG@k is a prefix sum of this matrix.
        self.ideal_gains = np.zeros((n_q, width), dtype=np.float64)
        for i, p in enumerate(positive):
            self.ideal_gains[i, : len(p)] = p

    def grades(self, doc_indices: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Relevance grade of each retrieved document.

        Args:
            doc_indices: (n, k) int corpus row indices; -1 marks an empty slot (grade 0).
            rows: (n,) query row of each line of ``doc_indices``; default ``arange(n)``.
        Returns:
            (n, k) int64 grades (0 for unjudged documents).
        """
        n = doc_indices.shape[0]
        rows = np.arange(n) if rows is None else np.asarray(rows)
        if self._keys.size == 0:
            return np.zeros(doc_indices.shape, dtype=np.int64)
        keys = rows[:, None].astype(np.int64) * len(self.corpus_ids) + doc_indices
        pos = np.searchsorted(self._keys, keys).clip(max=self._keys.size - 1)
        hit = (self._keys[pos] == keys) & (doc_indices >= 0)
        return np.where(hit, self._grades[pos], 0)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def order_run(scores: np.ndarray, doc_indices: np.ndarray, tie_rank: np.ndarray) -> np.ndarray:
    """Column order that sorts each row by score descending, then doc id descending (trec_eval's order).

    Args:
        scores: (n, k) float scores; doc_indices: (n, k) int corpus rows, -1 for empty slots (sorted last);
        tie_rank: (n_docs,) position of each corpus row in doc-id-descending order.
    Returns:
        (n, k) int64 column permutation per row.
    """
    empty = doc_indices < 0
    neg = np.where(empty, np.inf, -scores.astype(np.float64))
    tie = np.where(empty, np.iinfo(np.int64).max, tie_rank[np.where(empty, 0, doc_indices)])
    return np.lexsort((tie, neg), axis=-1)


@dataclass
class RunMetrics:
    """Per-query metric values for the queries a run was scored on.

    ``query_ids`` lists the scored queries (judged ones; minus those without relevant documents under
    ``no_relevant="skip"``); ``per_query[measure]`` is a float64 array aligned with it.
    """

    query_ids: list[str]
    per_query: dict[str, np.ndarray] = field(default_factory=dict)

    def mean(self, measure: str) -> float:
        """Mean over the scored queries (trec_eval's "all" line); NaN when no query was scored."""
        values = self.per_query[measure]
        return float(values.mean()) if values.size else float("nan")


def evaluate_ranking(
    scores: np.ndarray,
    doc_indices: np.ndarray,
    qrels: Qrels,
    *,
    measures: Sequence[str] = DEFAULT_MEASURES,
    no_relevant: str = "zero",
) -> RunMetrics:
    """Score a dense run (one row per query of ``qrels.query_ids``) against ``qrels``.

    Args:
        scores: (nq, k) float retrieval scores, any column order (re-sorted here as trec_eval does).
        doc_indices: (nq, k) int indices into ``qrels.corpus_ids``; -1 marks an empty slot.
        qrels: judgments aligned with the run's rows and doc indices.
        measures: e.g. ``("ndcg@10", "recall@100", "mrr@10")``.
        no_relevant: ``"zero"`` (default, pytrec_eval): queries whose judgments contain no relevant document
            score 0 and count in the mean; ``"skip"``: such queries are dropped.
    Returns:
        RunMetrics over the judged queries (queries absent from qrels are skipped).
    """
    if no_relevant not in NO_RELEVANT_POLICIES:
        raise EvaluationError(f"no_relevant must be one of {list(NO_RELEVANT_POLICIES)}, got {no_relevant!r}")
    parsed = [parse_measure(m) for m in measures]
    scores = np.asarray(scores)
    doc_indices = np.asarray(doc_indices, dtype=np.int64)
    n_q = len(qrels.query_ids)
    if scores.ndim != 2 or scores.shape != doc_indices.shape or scores.shape[0] != n_q:
        raise EvaluationError(
            f"run arrays must both be ({n_q}, k) for {n_q} queries, got scores {scores.shape} "
            f"and doc_indices {doc_indices.shape}"
        )
    keep = qrels.judged.copy()
    if no_relevant == "skip":
        keep &= qrels.n_relevant > 0
    rows = np.flatnonzero(keep)
    sc, idx = scores[rows], doc_indices[rows]
    order = order_run(sc, idx, qrels.tie_rank)
    idx = np.take_along_axis(idx, order, axis=1)
    grades = qrels.grades(idx, rows)
    n_rel = qrels.n_relevant[rows]
    k_run = idx.shape[1]

    out = RunMetrics(query_ids=[qrels.query_ids[r] for r in rows])
    for measure, (name, cut) in zip(measures, parsed):
        top = grades[:, : min(cut, k_run)]
        if name == "ndcg":
            dcg = np.clip(top, 0, None).astype(np.float64) @ _discounts(top.shape[1])
            ideal = qrels.ideal_gains[rows, : min(cut, qrels.ideal_gains.shape[1])]
            idcg = ideal @ _discounts(ideal.shape[1])
            value = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
        elif name == "recall":
            hits = (top >= 1).sum(axis=1).astype(np.float64)
            value = np.divide(hits, n_rel, out=np.zeros_like(hits), where=n_rel > 0)
        else:
            relevant = top >= 1
            first = relevant.argmax(axis=1)
            value = np.where(relevant.any(axis=1), 1.0 / (first + 1.0), 0.0)
        out.per_query[measure] = value
    return out


def evaluate_run_dict(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    measures: Sequence[str] = DEFAULT_MEASURES,
    no_relevant: str = "zero",
) -> RunMetrics:
    """pytrec_eval-style entry point, ``run = {query_id: {doc_id: score}}``; semantics of evaluate_ranking."""
    query_ids = list(run)
    corpus_ids = sorted({doc for docs in run.values() for doc in docs})
    doc_pos = {doc: j for j, doc in enumerate(corpus_ids)}
    width = max((len(docs) for docs in run.values()), default=0)
    scores = np.zeros((len(query_ids), width), dtype=np.float64)
    indices = np.full((len(query_ids), width), -1, dtype=np.int64)
    for i, qid in enumerate(query_ids):
        docs = run[qid]
        indices[i, : len(docs)] = [doc_pos[d] for d in docs]
        scores[i, : len(docs)] = list(docs.values())
    table = Qrels(qrels, query_ids, corpus_ids)
    return evaluate_ranking(scores, indices, table, measures=measures, no_relevant=no_relevant)

"""The retrieval evaluator every method shares: a (dim x precision) grid -> nDCG@10, Recall@100, MRR@10 rows.

For each requested dim the evaluator takes the prefix ``x[:, :dim]``, L2-normalises it, quantises it (see
quantize.py; calibration uses corpus rows only), runs exact top-k search (see search.py), and scores the run with
trec_eval semantics (see metrics.py).

Scoring per precision (recorded in each row's ``scoring`` field):

* ``float32`` — ``"ip"``: inner product of the normalised vectors (= cosine).
* ``int8``/``int4`` — ``"deq-sym"`` (default): queries *and* corpus are encoded with the corpus-calibrated
  quantiser, decoded, L2-renormalised and scored by inner product (the pilot's "deq" cosine).
  ``int_scoring="asymmetric"`` → ``"deq-asym"``: float queries against the decoded, renormalised corpus.
* ``binary`` — ``"hamming-median"`` / ``"hamming-sign"``: packed bits, Hamming distance; a row's score is
  ``1 - 2 * hamming / dim`` (the cosine of the ±1 codes). ``binary_rescore=N`` → ``"hamming-<t>+rescore<N>"``:
  Hamming top-N, then re-ranked by the float inner product (the float corpus is assumed to sit on disk; its
  size is not counted in ``bits``).

Ties: the corpus is indexed in doc-id-descending order and every search breaks ties by index, so ranks equal
trec_eval's ordering of the *full* ranking (score desc, doc id desc), including which tied documents make the
top k.

Memory: the corpus is searched ``chunk_rows`` rows at a time (prefix, normalisation and codes made per chunk)
and merged into a running top k (:class:`smec.evaluation.search.RunningTopK`, exact under the tie rule), and the
quantisers are fitted on the calibration sample, so beyond the caller's corpus array the evaluator holds about
one chunk x queries of scores, never a corpus x dim copy per grid point. A corpus of at most ``chunk_rows`` rows
is one chunk: exactly the search of an unchunked evaluator. On larger corpora the ranking is the same under the
tie rule wherever scores are computed exactly (binary; float data with exact products); an inexact float score
(int8 / int4 reconstructions) may differ in its last bit between a BLAS call over a chunk and one over the whole
corpus (as it does between faiss and torch), which can only swap documents whose scores agree to ~1e-7.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from smec.evaluation.calibration import calibration_positions
from smec.evaluation.errors import EvaluationError
from smec.evaluation.metrics import Qrels, evaluate_ranking, order_run
from smec.evaluation.quantize import (
    PRECISIONS,
    BinaryQuantizer,
    ScalarQuantizer,
    bits_per_vector,
    check_binary_dim,
    check_precision,
    compression_factor,
    l2_normalize,
)
from smec.evaluation.results import run_file_name, write_trec_run
from smec.evaluation.search import RunningTopK, rescore, search_hamming, search_inner_product
from smec.evaluation.spec import EvaluationSpec, check_evaluator_settings
from smec.evaluation.stats import standard_error

# Corpus rows per chunk: 64 x 1024 (faiss's flat search scores blocks of 1024 rows), ~100 MiB of float32 at 384
# dims, a (queries x chunk) score block of 256 MiB at 1,024 queries.
CHUNK_ROWS = 65_536

# The progress callback of evaluators built without one: a command sets it around its whole grid (every grid
# builds its own evaluators, so passing it down would change every grid's signature).
PROGRESS: ContextVar[Callable[[dict[str, Any]], None] | None] = ContextVar(
    "evaluation_progress", default=None
)


@contextmanager
def report_progress(callback: Callable[[dict[str, Any]], None] | None) -> Iterator[None]:
    """Within the block, every evaluator without its own ``progress`` calls ``callback`` with each row."""
    token = PROGRESS.set(callback)
    try:
        yield
    finally:
        PROGRESS.reset(token)


class RetrievalEvaluator:
    """Evaluate embeddings of one retrieval split at several dims and precisions.

    Every setting and its default is an :class:`~smec.evaluation.spec.EvaluationSpec` field (documented there);
    :meth:`EvaluationSpec.evaluator <smec.evaluation.spec.EvaluationSpec.evaluator>` builds one from a spec.

    Args:
        qrels: ``{query_id: {doc_id: grade}}``.
        query_ids: ids of the query rows passed to ``evaluate`` (queries without a qrels entry are skipped).
        corpus_ids: ids of the corpus rows (unique).
        input_dim: dimension of the float32 input being compressed (the concatenation), for the compression
            factor ``32 * input_dim / bits``.
        k, ndcg_at, recall_at, mrr_at, int_scoring, binary_threshold, binary_rescore, calibration_size, seed,
        backend, no_relevant: see :class:`~smec.evaluation.spec.EvaluationSpec`.
        chunk_rows: corpus rows searched at a time (module docstring, "Memory"); not a spec setting: it changes
            no result.
        progress: called with each row as soon as it is scored (a progress line per grid point); default: the
            one :func:`report_progress` set, if any.
    """

    def __init__(
        self,
        qrels: Mapping[str, Mapping[str, int]],
        query_ids: Sequence[str],
        corpus_ids: Sequence[str],
        *,
        input_dim: int,
        k: int = EvaluationSpec.k,
        ndcg_at: int = EvaluationSpec.ndcg_at,
        recall_at: int | None = EvaluationSpec.recall_at,
        mrr_at: int = EvaluationSpec.mrr_at,
        int_scoring: str = EvaluationSpec.int_scoring,
        binary_threshold: str = EvaluationSpec.binary_threshold,
        binary_rescore: int | None = EvaluationSpec.binary_rescore,
        calibration_size: int | None = EvaluationSpec.calibration_size,
        seed: int = EvaluationSpec.seed,
        backend: str = EvaluationSpec.backend,
        no_relevant: str = EvaluationSpec.no_relevant,
        chunk_rows: int = CHUNK_ROWS,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if len(corpus_ids) == 0:
            raise EvaluationError("the corpus is empty: nothing to retrieve")
        if len(query_ids) == 0:
            raise EvaluationError("no queries to evaluate")
        if not any(q in qrels for q in query_ids):
            raise EvaluationError(
                f"none of the {len(query_ids)} query ids appear in qrels (e.g. {query_ids[0]!r}); "
                "check that queries and qrels come from the same split"
            )
        # The settings it was built with: the EvaluationSpec.evaluator_settings() of the spec it came from.
        self.settings: dict[str, Any] = dict(
            k=k,
            ndcg_at=ndcg_at,
            recall_at=recall_at,
            mrr_at=mrr_at,
            calibration_size=calibration_size,
            seed=seed,
            int_scoring=int_scoring,
            binary_threshold=binary_threshold,
            binary_rescore=binary_rescore,
            backend=backend,
            no_relevant=no_relevant,
        )
        check_evaluator_settings(**self.settings)
        if input_dim < 1:
            raise EvaluationError(f"input_dim must be positive, got {input_dim}")
        if chunk_rows < 1:
            raise EvaluationError(f"chunk_rows must be positive, got {chunk_rows}")
        self.chunk_rows = int(chunk_rows)
        self.progress = progress
        recall_at = k if recall_at is None else recall_at

        self.query_ids = list(query_ids)
        self.corpus_ids = list(corpus_ids)
        self.qrels = Qrels(qrels, self.query_ids, self.corpus_ids)
        self.input_dim = int(input_dim)
        self.k = int(k)
        self.measures = (f"ndcg@{ndcg_at}", f"recall@{recall_at}", f"mrr@{mrr_at}")
        self.int_scoring = int_scoring
        self.binary_threshold = binary_threshold
        self.binary_rescore = binary_rescore
        self.backend = backend
        self.no_relevant = no_relevant
        # Corpus rows in doc-id-descending order: search breaks ties by row, trec_eval by doc id descending.
        self._perm = np.argsort(self.qrels.tie_rank)
        # Positions (in the doc-id-descending order) of the corpus rows that calibrate quantisers; None = all.
        self._calibration_pos = calibration_positions(self.qrels.tie_rank, calibration_size, seed)
        keep = self.qrels.judged & ((self.qrels.n_relevant > 0) | (no_relevant == "zero"))
        # One list shared by every row, so paired_difference can check alignment by identity.
        self.scored_query_ids = [q for q, kept in zip(self.query_ids, keep) if kept]
        self.n_unjudged_queries = int((~self.qrels.judged).sum())

    # ------------------------------------------------------------------ validation
    def _check_arrays(self, queries: np.ndarray, corpus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        queries, corpus = np.asarray(queries), np.asarray(corpus)
        if queries.ndim != 2 or corpus.ndim != 2:
            raise EvaluationError(
                f"queries and corpus must be 2-d, got shapes {queries.shape} and {corpus.shape}"
            )
        if corpus.shape[0] == 0:
            raise EvaluationError("the corpus is empty: nothing to retrieve")
        if queries.shape[0] != len(self.query_ids):
            raise EvaluationError(
                f"queries has {queries.shape[0]} rows but there are {len(self.query_ids)} query ids"
            )
        if corpus.shape[0] != len(self.corpus_ids):
            raise EvaluationError(
                f"corpus has {corpus.shape[0]} rows but there are {len(self.corpus_ids)} corpus ids"
            )
        if queries.shape[1] != corpus.shape[1]:
            raise EvaluationError(
                f"queries have {queries.shape[1]} dims but the corpus has {corpus.shape[1]}"
            )
        return queries, corpus

    @staticmethod
    def _check_grid(width: int, dims: Sequence[int], precisions: Sequence[str]) -> None:
        for p in precisions:
            check_precision(p)
        for dim in dims:
            if not 1 <= dim <= width:
                raise EvaluationError(
                    f"dim {dim} is larger than the input dim {width}"
                    if dim > width
                    else f"dims must be positive, got {dim}"
                )
            if "binary" in precisions:
                check_binary_dim(dim)

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        method: str,
        queries: np.ndarray,
        corpus: np.ndarray,
        dims: Sequence[int] | None = None,
        precisions: Sequence[str] = PRECISIONS,
        run_dir: Path | None = None,
    ) -> list[dict[str, Any]]:
        """Evaluate one method over ``dims x precisions``.

        Args:
            method: name in the rows (e.g. ``"concat"``, ``"smec"``).
            queries: (nq, D) float, rows aligned with ``query_ids``; corpus: (nc, D) float, aligned with
                corpus_ids.
            dims: dims to evaluate (each <= D; multiples of 8 when "binary" is requested); None = ``[D]``.
            precisions: subset of ("float32", "int8", "int4", "binary").
            run_dir: if given, writes ``<method>.<dim>.<precision>.trec`` (top k) there.
        Returns:
            one row per (dim, precision), in that order; see results.py for the row fields.
        """
        queries, corpus = self._check_arrays(queries, corpus)
        precisions = (precisions,) if isinstance(precisions, str) else tuple(precisions)
        dims = [corpus.shape[1]] if dims is None else [int(d) for d in dims]
        self._check_grid(corpus.shape[1], dims, precisions)
        rows = []
        for dim in dims:
            start = time.perf_counter()
            q = l2_normalize(queries[:, :dim])
            pos = self._perm if self._calibration_pos is None else self._perm[self._calibration_pos]
            sample = l2_normalize(corpus[pos, :dim])
            prep = time.perf_counter() - start
            for precision in precisions:
                start = time.perf_counter()
                scores, idx, scoring = self._search(q, corpus, dim, sample, precision)
                rows.append(
                    self.score_ranking(
                        method,
                        dim,
                        precision,
                        bits_per_vector(precision, dim),
                        scores,
                        self._perm[idx],
                        scoring=scoring,
                        run_dir=run_dir,
                        elapsed=prep / len(precisions) + time.perf_counter() - start,
                    )
                )
        return rows

    def _chunks(self, corpus: np.ndarray, dim: int):
        """(offset, rows) of the corpus in doc-id-descending order, ``chunk_rows`` at a time, prefix ``dim``
        L2-normalised: what bounds memory by chunk x queries instead of corpus x grid."""
        for start in range(0, len(self._perm), self.chunk_rows):
            yield start, l2_normalize(corpus[self._perm[start : start + self.chunk_rows], :dim])

    def _search(
        self, q: np.ndarray, corpus: np.ndarray, dim: int, sample: np.ndarray, precision: str
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Quantise (fitted on the calibration ``sample``) and search the corpus chunk by chunk with a running
        top k: scores, rows in doc-id-descending order, scoring name."""
        if precision == "binary":
            return self._search_binary(q, corpus, dim, sample)
        scoring = "ip"
        encode = None
        if precision in ("int8", "int4"):
            sq = ScalarQuantizer(8 if precision == "int8" else 4).fit(sample)

            def encode(c: np.ndarray) -> np.ndarray:
                return l2_normalize(sq.decode(sq.encode(c)))

            if self.int_scoring == "symmetric":
                q = encode(q)
            scoring = "deq-sym" if self.int_scoring == "symmetric" else "deq-asym"
        top = RunningTopK(len(q), self.k)
        for offset, c in self._chunks(corpus, dim):
            top.add(
                *search_inner_product(q, c if encode is None else encode(c), self.k, backend=self.backend),
                offset,
            )
        return *top.result(), scoring

    def _search_binary(
        self, q: np.ndarray, corpus: np.ndarray, dim: int, sample: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, str]:
        bq = BinaryQuantizer(self.binary_threshold).fit(sample)
        scoring = f"hamming-{self.binary_threshold}"
        depth = self.k if self.binary_rescore is None else self.binary_rescore
        q_codes = bq.encode(q)
        top = RunningTopK(len(q), depth, descending=False)
        for offset, c in self._chunks(corpus, dim):
            top.add(*search_hamming(q_codes, bq.encode(c), depth), offset)
        dist, i = top.result()
        if self.binary_rescore is None:
            return 1.0 - 2.0 * dist.astype(np.float32) / dim, i, scoring
        # Only the shortlisted rows are read back in float (rescore breaks ties by row: np.unique keeps order).
        rows, local = np.unique(i, return_inverse=True)
        shortlist = l2_normalize(corpus[self._perm[rows], :dim])
        s, pos = rescore(q, shortlist, local.reshape(i.shape), self.k)
        return s, rows[pos], f"{scoring}+rescore{self.binary_rescore}"

    def score_ranking(
        self,
        method: str,
        dim: int,
        precision: str,
        bits: int,
        scores: np.ndarray,
        indices: np.ndarray,
        *,
        scoring: str,
        run_dir: Path | None = None,
        elapsed: float | None = None,
    ) -> dict[str, Any]:
        """Turn one run into a row; also the entry point for methods with their own search (e.g. OPQ+PQ).

        Args:
            scores, indices: (nq, k') run over ``query_ids`` with indices into ``corpus_ids`` (-1 = empty);
                any column order (re-sorted by trec_eval's rule).
            bits: bits stored per vector (sets ``compression``); scoring: free-text label of the scoring rule.
            run_dir: if given, writes the run as ``<method>.<dim>.<precision>.trec``.
            elapsed: seconds to report as ``time_s`` (default: the time spent in this call).
        """
        start = time.perf_counter()
        scores = np.asarray(scores)
        indices = np.asarray(indices, dtype=np.int64)
        metrics = evaluate_ranking(
            scores, indices, self.qrels, measures=self.measures, no_relevant=self.no_relevant
        )
        if run_dir is not None:
            order = order_run(scores, indices, self.qrels.tie_rank)
            write_trec_run(
                Path(run_dir) / run_file_name(method, dim, precision),
                self.query_ids,
                self.corpus_ids,
                np.take_along_axis(scores, order, 1),
                np.take_along_axis(indices, order, 1),
                tag=f"{method}.{dim}.{precision}",
            )
        ndcg, recall, mrr = self.measures
        row: dict[str, Any] = {
            "method": method,
            "dim": int(dim),
            "precision": precision,
            "bits": int(bits),
            "compression": compression_factor(self.input_dim, bits),
            "scoring": scoring,
            ndcg: metrics.mean(ndcg),
            f"{ndcg}_se": standard_error(metrics.per_query[ndcg]),
            recall: metrics.mean(recall),
            mrr: metrics.mean(mrr),
            "n_queries": len(metrics.query_ids),
            "time_s": round((elapsed or 0.0) + time.perf_counter() - start, 4),
            "per_query": metrics.per_query,
            "query_ids": self.scored_query_ids,
        }
        progress = self.progress if self.progress is not None else PROGRESS.get()
        if progress is not None:
            progress(row)
        return row

import numpy as np
import pytest
import pytrec_eval

from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.quantize import BinaryQuantizer, l2_normalize
from smec.evaluation.stats import paired_difference

N_DOCS, N_QUERIES, DIM = 300, 40, 32


@pytest.fixture
def data():
    """Queries are noisy copies of graded-relevant docs; q0 has no qrels entry, q1 only grade-0 judgments."""
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    rel = rng.integers(0, N_DOCS, N_QUERIES)
    queries = corpus[rel] + 1.5 * rng.standard_normal((N_QUERIES, DIM)).astype(np.float32)
    # Ids in an order unrelated to row order, so the doc-id tie rule is really exercised.
    corpus_ids = [f"doc{rng.integers(10**6):06d}-{j}" for j in range(N_DOCS)]
    query_ids = [f"q{i}" for i in range(N_QUERIES)]
    qrels = {}
    for i in range(1, N_QUERIES):
        extra = rng.choice(N_DOCS, 3, replace=False)
        qrels[query_ids[i]] = {
            corpus_ids[rel[i]]: 3,
            **{corpus_ids[j]: int(rng.integers(0, 3)) for j in extra},
        }
    qrels["q1"] = {corpus_ids[0]: 0}
    return queries, corpus, query_ids, corpus_ids, qrels


def _read_run(path):
    run = {}
    for line in path.read_text().splitlines():
        qid, q0, doc, _, score, _ = line.split()
        assert q0 == "Q0"
        run.setdefault(qid, {})[doc] = float(score)
    return run


def test_rows_match_pytrec_eval_on_written_run_files(data, tmp_path):
    queries, corpus, qids, cids, qrels = data
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=64, k=50)
    rows = ev.evaluate(
        "m:x",
        queries,
        corpus,
        dims=[16, 32],
        precisions=("float32", "int8", "int4", "binary"),
        run_dir=tmp_path,
    )
    assert [(r["dim"], r["precision"]) for r in rows] == [
        (d, p) for d in (16, 32) for p in ("float32", "int8", "int4", "binary")
    ]
    measures = {"ndcg_cut.10", "recall.50", "recip_rank"}
    for row in rows:
        path = tmp_path / f"m_x.{row['dim']}.{row['precision']}.trec"
        run = _read_run(path)
        assert len(run) == N_QUERIES and all(len(docs) == 50 for docs in run.values())
        ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
        assert row["n_queries"] == len(ref) == N_QUERIES - 1
        assert row["ndcg@10"] == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ref.values()]), abs=1e-9)
        assert row["recall@50"] == pytest.approx(np.mean([v["recall_50"] for v in ref.values()]), abs=1e-9)
        assert row["per_query"]["ndcg@10"].shape == (N_QUERIES - 1,)
        assert row["query_ids"] is rows[0]["query_ids"]
    by = {(r["dim"], r["precision"]): r for r in rows}
    assert by[(32, "float32")]["ndcg@10"] > 0.5  # the fixture is a solvable task
    assert by[(16, "int8")]["compression"] == 32 * 64 / (8 * 16)
    assert by[(32, "binary")]["bits"] == 32 and by[(32, "binary")]["scoring"] == "hamming-median"
    assert by[(32, "int4")]["scoring"] == "deq-sym"


def test_binary_ties_match_trec_eval_on_the_full_ranking(data):
    """8-bit codes tie massively, also at rank k: the top k must be trec_eval's full-ranking top k."""
    queries, corpus, qids, cids, _ = data
    rng = np.random.default_rng(5)
    # Dense graded judgments, so that any change in which tied documents fill the top 10 changes nDCG@10.
    qrels = {
        q: {cids[j]: int(rng.integers(0, 4)) for j in rng.choice(N_DOCS, 150, replace=False)} for q in qids
    }
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, k=20)
    (row,) = ev.evaluate("m", queries, corpus, dims=[8], precisions=("binary",))
    q, c = l2_normalize(queries[:, :8]), l2_normalize(corpus[:, :8])
    bq = BinaryQuantizer("median").fit(c)
    qc, cc = bq.encode(q), bq.encode(c)
    ham = np.bitwise_count(qc[:, None, :] ^ cc[None]).sum(-1).astype(np.int64)
    full_run = {
        qid: {cids[j]: float(1 - 2 * ham[i, j] / 8) for j in range(N_DOCS)} for i, qid in enumerate(qids)
    }
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(full_run)
    expected = np.array([ref[q]["ndcg_cut_10"] for q in row["query_ids"]])
    np.testing.assert_allclose(row["per_query"]["ndcg@10"], expected, atol=1e-12)


def test_scoring_options(data):
    queries, corpus, qids, cids, qrels = data
    full = RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, k=30, binary_rescore=N_DOCS)
    (f32, binary) = full.evaluate("m", queries, corpus, dims=[16], precisions=("float32", "binary"))
    # Rescoring the whole corpus with float vectors is the float32 search.
    assert binary["scoring"] == f"hamming-median+rescore{N_DOCS}"
    np.testing.assert_array_equal(binary["per_query"]["ndcg@10"], f32["per_query"]["ndcg@10"])
    asym = RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, k=30, int_scoring="asymmetric")
    (row,) = asym.evaluate("m", queries, corpus, dims=[16], precisions=("int4",))
    assert row["scoring"] == "deq-asym"
    diff, se = paired_difference(row, f32)
    assert abs(diff) < 0.1 and se >= 0


def test_skip_policy_drops_queries_without_relevant_docs(data):
    queries, corpus, qids, cids, qrels = data
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, k=10, no_relevant="skip")
    (row,) = ev.evaluate("m", queries, corpus, dims=[8], precisions=("float32",))
    assert row["n_queries"] == N_QUERIES - 2
    assert "q1" not in row["query_ids"] and "q0" not in row["query_ids"]


def test_bad_input_errors(data):
    queries, corpus, qids, cids, qrels = data
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, k=10)
    with pytest.raises(EvaluationError, match="dim 64 is larger than the input dim 32"):
        ev.evaluate("m", queries, corpus, dims=[64])
    with pytest.raises(EvaluationError, match=r"unknown precision 'fp8': valid precisions are \["):
        ev.evaluate("m", queries, corpus, dims=[8], precisions=("fp8",))
    with pytest.raises(EvaluationError, match="binary precision needs a dim that is a multiple of 8, got 12"):
        ev.evaluate("m", queries, corpus, dims=[12])
    with pytest.raises(EvaluationError, match="queries has 39 rows but there are 40 query ids"):
        ev.evaluate("m", queries[1:], corpus)
    with pytest.raises(EvaluationError, match="corpus has 299 rows but there are 300 corpus ids"):
        ev.evaluate("m", queries, corpus[1:])
    with pytest.raises(EvaluationError, match="queries have 32 dims but the corpus has 16"):
        ev.evaluate("m", queries, corpus[:, :16])
    with pytest.raises(EvaluationError, match=r"none of the 2 query ids appear in qrels \(e.g. 'x'\)"):
        RetrievalEvaluator(qrels, ["x", "y"], cids, input_dim=DIM)
    with pytest.raises(EvaluationError, match="the corpus is empty: nothing to retrieve"):
        RetrievalEvaluator(qrels, qids, [], input_dim=DIM)
    with pytest.raises(EvaluationError, match="recall_at must be between 1 and k=10, got 100"):
        RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, k=10, recall_at=100)


def _four_hot(rng, n):
    x = np.zeros((n, 16), dtype=np.float32)
    for row in x:
        row[rng.choice(16, 4, replace=False)] = 1.0
    return x


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 64, N_DOCS - 1])
def test_chunked_search_equals_one_search_ties_included(data, chunk_rows, backend, tmp_path):
    """Every row has four 1s among 16 dims: normalised entries are 0 or 0.5, so every float score is a multiple
    of 0.25 computed exactly in any order, and ties (also at rank k) are everywhere; Hamming distances are
    integers. (int8 / int4 decode to inexact values, whose sums a BLAS rounds differently in blocks of other
    shapes: see the evaluator's "Memory" note and the float-data test below.)"""
    precisions = ("float32", "binary")
    _, _, qids, cids, qrels = data
    rng = np.random.default_rng(3)
    queries, corpus = _four_hot(rng, N_QUERIES), _four_hot(rng, N_DOCS)
    settings = dict(input_dim=16, k=20, calibration_size=100, backend=backend)
    one = RetrievalEvaluator(qrels, qids, cids, **settings)
    chunked = RetrievalEvaluator(qrels, qids, cids, chunk_rows=chunk_rows, **settings)
    for ev, out in ((one, tmp_path / "a"), (chunked, tmp_path / "b")):
        ev.evaluate("m", queries, corpus, [16], precisions, run_dir=out)
    for path in (tmp_path / "a").iterdir():  # the same documents at every rank, tied or not
        assert (tmp_path / "b" / path.name).read_text() == path.read_text()
    assert len(list((tmp_path / "b").iterdir())) == len(precisions)
    rescored = RetrievalEvaluator(qrels, qids, cids, binary_rescore=50, chunk_rows=chunk_rows, **settings)
    whole = RetrievalEvaluator(qrels, qids, cids, binary_rescore=50, **settings)
    a, b = (e.evaluate("m", queries, corpus, [16], ("binary",))[0] for e in (whole, rescored))
    np.testing.assert_array_equal(a["per_query"]["ndcg@10"], b["per_query"]["ndcg@10"])


def test_chunked_rows_equal_unchunked_rows_on_float_data(data):
    queries, corpus, qids, cids, qrels = data
    grid = dict(dims=[16, 32], precisions=("float32", "int8", "int4", "binary"))
    one = RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, k=30).evaluate("m", queries, corpus, **grid)
    seen = []
    ev = RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, k=30, chunk_rows=50, progress=seen.append)
    rows = ev.evaluate("m", queries, corpus, **grid)
    assert seen == rows  # one progress call per grid point, in order
    for a, b in zip(one, rows, strict=True):
        assert (a["dim"], a["precision"], a["ndcg@10"]) == (b["dim"], b["precision"], b["ndcg@10"])
        np.testing.assert_array_equal(a["per_query"]["recall@30"], b["per_query"]["recall@30"])
    with pytest.raises(EvaluationError, match="chunk_rows must be positive, got 0"):
        RetrievalEvaluator(qrels, qids, cids, input_dim=DIM, chunk_rows=0)

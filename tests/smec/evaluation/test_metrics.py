import numpy as np
import pytest
import pytrec_eval

from smec.evaluation.errors import EvaluationError
from smec.evaluation.metrics import Qrels, evaluate_ranking, evaluate_run_dict, parse_measure


def _random_case(seed: int, n_queries: int = 60, n_docs: int = 300, depth: int = 40):
    """Random run with many score ties (scores rounded to 1 decimal), graded qrels 0..3, some odd queries."""
    rng = np.random.default_rng(seed)
    docs = [f"d{rng.integers(10**6):06d}x{j}" for j in range(n_docs)]
    run, qrels = {}, {}
    for i in range(n_queries):
        qid = f"q{i}"
        picked = rng.choice(n_docs, size=depth, replace=False)
        run[qid] = {docs[j]: float(np.round(rng.random(), 1)) for j in picked}
        if i % 10 == 0:
            continue  # no qrels entry at all: skipped
        judged = rng.choice(n_docs, size=rng.integers(1, 25), replace=False)
        grades = rng.integers(0, 4, size=judged.size)
        if i % 10 == 1:
            grades[:] = 0  # judged but nothing relevant
        qrels[qid] = {docs[j]: int(g) for j, g in zip(judged, grades)}
        if i % 7 == 0:
            qrels[qid]["not-in-corpus"] = 2  # relevant but unretrievable: counts in IDCG and recall
    return run, qrels


def _pytrec(run, qrels):
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "ndcg_cut.5", "recall.20", "recip_rank"})
    full = ev.evaluate(run)
    # recip_rank has no cut-off in trec_eval: MRR@10 is recip_rank on the run truncated to its top 10.
    return full


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pytrec_eval_with_ties_grades_and_empty_queries(seed):
    run, qrels = _random_case(seed)
    ref = _pytrec(run, qrels)
    got = evaluate_run_dict(run, qrels, measures=("ndcg@10", "ndcg@5", "recall@20", "mrr@40", "mrr@3"))
    assert got.query_ids == list(ref)  # same queries: those with a qrels entry, including all-zero ones
    for i, qid in enumerate(got.query_ids):
        assert got.per_query["ndcg@10"][i] == pytest.approx(ref[qid]["ndcg_cut_10"], abs=1e-12)
        assert got.per_query["ndcg@5"][i] == pytest.approx(ref[qid]["ndcg_cut_5"], abs=1e-12)
        assert got.per_query["recall@20"][i] == pytest.approx(ref[qid]["recall_20"], abs=1e-12)
        assert got.per_query["mrr@40"][i] == pytest.approx(ref[qid]["recip_rank"], abs=1e-12)
        rr = ref[qid]["recip_rank"]
        assert got.per_query["mrr@3"][i] == pytest.approx(rr if rr >= 1 / 3 else 0.0, abs=1e-12)
    assert got.mean("ndcg@10") == pytest.approx(np.mean([v["ndcg_cut_10"] for v in ref.values()]), abs=1e-12)


def test_ties_are_broken_by_doc_id_descending():
    qrels = {"q": {"a": 1}}
    run = {"q": {"a": 0.5, "b": 0.5, "c": 0.5}}  # trec_eval order: c, b, a -> relevant at rank 3
    got = evaluate_run_dict(run, qrels, measures=("mrr@10", "ndcg@10"))
    assert got.per_query["mrr@10"][0] == pytest.approx(1 / 3)
    assert got.per_query["ndcg@10"][0] == pytest.approx(0.5)


def test_no_relevant_policy_zero_and_skip():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    run = {"q1": {"a": 1.0}, "q2": {"b": 1.0}, "q3": {"a": 1.0}}
    zero = evaluate_run_dict(run, qrels, measures=("ndcg@10",))
    assert zero.query_ids == ["q1", "q2"]
    assert zero.per_query["ndcg@10"].tolist() == [1.0, 0.0]
    skip = evaluate_run_dict(run, qrels, measures=("ndcg@10",), no_relevant="skip")
    assert skip.query_ids == ["q1"]
    assert skip.mean("ndcg@10") == 1.0


def test_negative_grades_give_no_gain_like_trec_eval():
    qrels = {"q": {"a": -1, "b": 2, "c": 1}}
    run = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}}
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)["q"]["ndcg_cut_10"]
    assert evaluate_run_dict(run, qrels, measures=("ndcg@10",)).per_query["ndcg@10"][0] == pytest.approx(ref)


def test_dense_run_with_empty_slots():
    table = Qrels({"q0": {"b": 1}, "q1": {"a": 2}}, ["q0", "q1"], ["a", "b", "c"])
    scores = np.array([[0.9, 0.8, 0.0], [0.7, 0.0, 0.0]])
    idx = np.array([[2, 1, -1], [0, -1, -1]])
    got = evaluate_ranking(scores, idx, table, measures=("mrr@10", "recall@2"))
    assert got.per_query["mrr@10"].tolist() == [0.5, 1.0]
    assert got.per_query["recall@2"].tolist() == [1.0, 1.0]


def test_bad_inputs_raise():
    with pytest.raises(EvaluationError, match=r"unknown measure 'map@10'"):
        parse_measure("map@10")
    with pytest.raises(EvaluationError, match=r"corpus_ids contain duplicates \(1 repeated ids\)"):
        Qrels({}, ["q"], ["a", "a"])
    table = Qrels({"q": {"a": 1}}, ["q"], ["a"])
    with pytest.raises(EvaluationError, match=r"run arrays must both be \(1, k\) for 1 queries"):
        evaluate_ranking(np.zeros((2, 1)), np.zeros((2, 1), dtype=int), table)
    with pytest.raises(EvaluationError, match=r"no_relevant must be one of \['zero', 'skip'\]"):
        evaluate_ranking(np.zeros((1, 1)), np.zeros((1, 1), dtype=int), table, no_relevant="drop")

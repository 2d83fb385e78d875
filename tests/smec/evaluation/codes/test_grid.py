import numpy as np
import pytest

from smec.evaluation.codes import make_code
from smec.evaluation.codes.grid import evaluate_code
from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from tests.smec.evaluation.codes.vectors import make_vectors


@pytest.fixture
def split():
    """400 docs in 32 dims; each query is a noisy copy of its one relevant doc."""
    rng = np.random.default_rng(0)
    corpus = make_vectors(400, 32)
    rel = rng.integers(0, 400, 40)
    queries = corpus[rel] + 0.2 * rng.standard_normal((40, 32)).astype(np.float32)
    qids, cids = [f"q{i}" for i in range(40)], [f"d{j}" for j in range(400)]
    qrels = {qids[i]: {cids[rel[i]]: 1} for i in range(40)}
    return RetrievalEvaluator(qrels, qids, cids, input_dim=32, k=20), queries, corpus


def test_row_counts_the_true_bytes(split):
    ev, queries, corpus = split
    row = evaluate_code(ev, make_code("rabitq", rescore=50), "pca", queries, corpus, dim=24)
    assert (row["method"], row["dim"], row["precision"], row["family"]) == ("pca", 24, "rabitq", "rabitq")
    assert row["bytes"] == 24 // 8 + 8 and row["bits"] == 8 * 11 and row["compression"] == 32 * 32 / 88
    assert row["extra_bytes"] == 4 * 24 and row["rescore"] == 50 and row["scoring"] == "rabitq-qb8+rescore50"
    assert row["symmetric"] is False and row["fit_s"] >= 0 and row["n_queries"] == 40


def test_rescoring_everything_equals_the_float32_row(split, tmp_path):
    ev, queries, corpus = split
    code_row = evaluate_code(ev, make_code("itq", rescore=400), "concat", queries, corpus, run_dir=tmp_path)
    float_row = ev.evaluate("concat", queries, corpus, [32], ["float32"])[0]
    assert code_row["ndcg@10"] == pytest.approx(float_row["ndcg@10"])
    np.testing.assert_allclose(code_row["per_query"]["ndcg@10"], float_row["per_query"]["ndcg@10"])
    assert (tmp_path / "concat.32.itq.trec").is_file()


def test_codes_rank_sensibly_and_columns_select(split):
    ev, queries, corpus = split
    rows = {
        name: evaluate_code(ev, make_code(name), "concat", queries, corpus)["ndcg@10"]
        for name in ("itq", "rabitq4", "sq8-quantiles")
    }
    assert rows["sq8-quantiles"] > 0.9 and rows["rabitq4"] > 0.8 and rows["itq"] > 0.3
    picked = evaluate_code(ev, make_code("itq"), "ads", queries, corpus, columns=np.arange(8, 24))
    assert picked["dim"] == 16 and picked["bytes"] == 2
    with pytest.raises(EvaluationError, match=r"^dim 40 must be between 1 and the input dim 32$"):
        evaluate_code(ev, make_code("itq"), "concat", queries, corpus, dim=40)

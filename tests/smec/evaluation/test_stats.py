import numpy as np
import pytest

from smec.evaluation.errors import EvaluationError
from smec.evaluation.stats import format_mean_se, paired_difference, standard_error


def test_standard_error_formula():
    x = np.random.default_rng(0).random(50)
    assert standard_error(x) == pytest.approx(np.std(x, ddof=1) / np.sqrt(50))
    assert np.isnan(standard_error(np.array([0.3])))


def test_paired_difference_is_smaller_than_unpaired_for_correlated_systems():
    rng = np.random.default_rng(1)
    hardness = rng.random(400)
    ids = [f"q{i}" for i in range(400)]
    a = {"per_query": {"ndcg@10": hardness + 0.02 * rng.standard_normal(400)}, "query_ids": ids}
    b = {"per_query": {"ndcg@10": hardness - 0.01 + 0.02 * rng.standard_normal(400)}, "query_ids": ids}
    diff, se = paired_difference(a, b)
    assert diff == pytest.approx(np.mean(a["per_query"]["ndcg@10"] - b["per_query"]["ndcg@10"]))
    assert se < 0.2 * standard_error(a["per_query"]["ndcg@10"])
    assert 0.005 < diff < 0.015


def test_paired_difference_errors():
    a = {"per_query": {"ndcg@10": np.zeros(2)}, "query_ids": ["q1", "q2"]}
    b = {"per_query": {"ndcg@10": np.zeros(2)}, "query_ids": ["q1", "q3"]}
    with pytest.raises(EvaluationError, match="rows were scored on different queries"):
        paired_difference(a, b)
    with pytest.raises(EvaluationError, match=r"row_b has no per-query 'ndcg@10' values"):
        paired_difference(a, {"ndcg@10": 0.3})


def test_format_mean_se():
    assert format_mean_se(0.28412, 0.0071) == "0.284 ± 0.007"
    assert format_mean_se(0.28412, float("nan")) == "0.284"
    assert format_mean_se(0.5, 0.01234, digits=4) == "0.5000 ± 0.0123"

import numpy as np
import pytest

from smec.evaluation.codes import make_code
from smec.evaluation.codes.grid import code_rows, evaluate_code, grid_budgets, plan_codes
from smec.evaluation.errors import EvaluationError
from smec.evaluation.evaluator import RetrievalEvaluator
from smec.evaluation.spec import CodeSpec
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


def test_grid_budgets_are_the_bytes_the_grid_reaches_at_24x_or_more():
    # The demo: 1152-d input, dims 48..384 x float32 / int8 / int4 / binary.
    assert grid_budgets([48, 96, 192, 384], ["float32", "int8", "int4", "binary"], 1152) == [
        6,
        12,
        24,
        48,
        96,
        192,
    ]
    assert grid_budgets([12], ["binary", "int4"], 32, min_compression=1) == [6]  # 12 bits is not whole bytes
    assert grid_budgets([96], ["float32"], 1152) == []  # 12x only


def test_plan_prefixes_budgets_and_separate_sizes():
    specs = [
        CodeSpec("rabitq"),
        CodeSpec("rq", {"m": 8}, max_dim=16),
        CodeSpec("itq", budgets=[2, 4], methods=["pca"]),
    ]
    dropped: list[str] = []
    plan = plan_codes(specs, "pca", [4, 8, 12, 16], 32, dropped)
    got = [(p.spec.precision, p.budget, p.dim) for p in plan]
    # rabitq: 8 factor bytes + d/8 -> 4 bytes do not fit, 12 -> 32 dims, 16 -> still 32 dims (made once);
    # rq: 8 bytes at every budget >= 8, on 16 dims (max_dim), made once; itq at its own budgets.
    assert got == [("rabitq", 12, 32), ("rq", 8, 16), ("itq", 2, 16), ("itq", 4, 32)]
    assert dropped == [
        "pca + rabitq at [4, 8] bytes (its narrowest input does not fit)",
        "pca + rq at [4] bytes (its narrowest input does not fit)",
    ]
    # A system of separate sizes: each size whole, the widest that fits; itq does not run on "smec".
    plan = plan_codes(specs, "smec", [4, 8, 12, 16], [8, 16, 24], [])
    assert [(p.spec.precision, p.budget, p.dim) for p in plan] == [("rabitq", 12, 24), ("rq", 8, 16)]


def test_budget_sized_codes_make_one_row_per_budget(split):
    # RQ / PLSQ without m: M codebooks = the budget's bytes (a multiple of splits), one row per budget on the
    # widest input allowed, labelled with the budget; each row's bytes are M, within its budget.
    specs = [CodeSpec("rq", {"iterations": 1}, max_dim=16), CodeSpec("plsq", {"splits": 4, "iterations": 1})]
    dropped: list[str] = []
    plan = plan_codes(specs, "pca", [2, 4, 6, 8], 32, dropped)
    assert [(p.precision, p.budget, p.dim) for p in plan] == [
        ("rq-2B", 2, 16),
        ("rq-4B", 4, 16),
        ("rq-6B", 6, 16),
        ("rq-8B", 8, 16),
        ("plsq-4B", 4, 32),
        ("plsq-8B", 8, 32),
    ]
    # plsq at 6 bytes would be 4 codebooks (one per slice) again: the 4-byte row, not made twice; at 2 bytes
    # not even one per slice fits.
    assert dropped == ["pca + plsq at [2] bytes (its narrowest input does not fit)"]
    assert [p.build().m for p in plan] == [2, 4, 6, 8, 4, 8]
    ev, queries, corpus = split
    rows = code_rows(ev, specs[:1], "pca", queries, corpus, [2, 4], dropped=[])
    assert [(r["precision"], r["dim"], r["bytes"], r["budget_bytes"]) for r in rows] == [
        ("rq-2B", 16, 2, 2),
        ("rq-4B", 16, 4, 4),
    ]
    with pytest.raises(EvaluationError, match=r"^rq: m \(codebooks = bytes per vector\) is None: give m"):
        make_code("rq").bytes_for_dim(16)


def test_code_rows_label_budget_and_rescoring_memory(split, tmp_path):
    ev, queries, corpus = split
    specs = [CodeSpec("sq4-quantiles"), CodeSpec("itq", {"rescore": 40}, budgets=[2])]
    rows = code_rows(ev, specs, "pca", queries, corpus, [8, 16], run_dir=tmp_path, dropped=[])
    got = [
        (r["precision"], r["dim"], r["bytes"], r["bits"], r["budget_bytes"], r["extra_bytes"]) for r in rows
    ]
    assert got == [
        ("sq4-quantiles", 16, 8, 64, 8, 0),
        ("sq4-quantiles", 32, 16, 128, 16, 0),
        ("itq+rescore40", 16, 2, 16, 2, 4 * 16),
    ]
    assert rows[-1]["compression"] == 32 * 32 / 16 and rows[-1]["scoring"] == "itq-hamming+rescore40"
    assert (tmp_path / "pca.16.itq_rescore40.trec").is_file()
    # Fitted on the evaluator's calibration sample: the row is evaluate_code's with the spec's sample.
    same = evaluate_code(ev, make_code("sq4-quantiles"), "pca", queries, corpus, 16)
    assert rows[0]["ndcg@10"] == same["ndcg@10"]

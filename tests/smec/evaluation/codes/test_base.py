import re

import faiss
import numpy as np
import pytest

from smec.evaluation.codes import (
    CODES,
    FAISS_FLOOR,
    FAISS_NEEDS,
    ITQBinary,
    LearnedRangeSQ,
    RaBitQ,
    dim_for_budget,
    faiss_version,
    make_code,
)
from smec.evaluation.errors import EvaluationError
from smec.evaluation.search import search_inner_product
from smec.evaluation.spec import EvaluationSpec
from tests.smec.evaluation.codes.vectors import make_vectors


@pytest.mark.parametrize(
    "code", [ITQBinary(rescore=40), RaBitQ(1, rescore=40), LearnedRangeSQ(4, rescore=40)]
)
def test_rescoring_returns_the_float_ranking_of_the_shortlist(corpus, queries, code):
    code.fit(corpus).index(corpus)
    scores, idx = code.search(queries, 10)
    _, shortlist = code._search(queries, 40)
    exact = queries @ corpus.T
    for row in range(len(queries)):
        cand = shortlist[row]
        best = cand[np.lexsort((cand, -exact[row, cand]))][:10]
        np.testing.assert_array_equal(idx[row], best)
        np.testing.assert_allclose(scores[row], exact[row, best], rtol=1e-5)
    assert code.extra_bytes_per_vector == 4 * 32 and code.scoring.endswith("+rescore40")


def test_rescoring_the_whole_corpus_is_exact_search(corpus, queries):
    code = RaBitQ(1, rescore=len(corpus)).fit(corpus).index(corpus)
    scores, idx = code.search(queries, 10)
    want_s, want_i = search_inner_product(queries, corpus, 10, backend="torch")
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5)


def test_describe_keeps_rescoring_memory_apart(corpus):
    code = make_code("rabitq2", rescore=100).fit(corpus)
    assert code.describe() == {
        "code": "rabitq2",
        "family": "rabitq",
        "scoring": "rabitq-qb8+rescore100",
        "symmetric": False,
        "bytes": 8 // 2 + 4 + 12 + 8,  # 32 dims: 4 sign bytes + 12 + 4 extra-bit bytes + 8
        "extra_bytes": 128,
        "rescore": 100,
    }
    assert make_code("rabitq2").fit(corpus).describe()["extra_bytes"] == 0


def test_registry_builds_every_code(corpus):
    extra = {"rq": {"m": 4}, "lsq": {"m": 4}, "prq": {"m": 4, "splits": 2}, "plsq": {"m": 4, "splits": 2}}
    for name in CODES:
        code = make_code(name, **extra.get(name, {}))
        assert code.name == name
    with pytest.raises(EvaluationError, match=r"^code 'plsq' is a product quantiser: give splits >= 2"):
        make_code("plsq", m=8)
    with pytest.raises(EvaluationError, match=r"^unknown code 'pq': expected one of \['itq', 'lsq', "):
        make_code("pq")
    with pytest.raises(
        EvaluationError, match=r"^code 'rabitq2' fixes \['bits'\]; choose another code name instead$"
    ):
        make_code("rabitq2", bits=4)
    with pytest.raises(EvaluationError, match=r"^code 'itq': bad parameters \['beam'\]: "):
        make_code("itq", beam=3)


def test_dim_for_budget_at_the_demo_budgets():
    # 1152-d float32 = 4608 bytes; 48x = 96 bytes, 96x = 48, 192x = 24, 384x = 12, 768x = 6.
    assert dim_for_budget(make_code("rabitq"), 96, 1152) == 704
    assert dim_for_budget(make_code("rabitq2"), 96, 1152) == 304
    assert dim_for_budget(make_code("rabitq4"), 48, 1152) == 56
    assert dim_for_budget(make_code("rabitq"), 12, 1152) == 32
    assert dim_for_budget(make_code("rabitq"), 6, 1152) is None  # its two float32 factors alone take 8
    assert dim_for_budget(make_code("itq"), 6, 1152) == 48
    assert dim_for_budget(make_code("sq4-quantiles"), 48, 1152) == 96
    assert dim_for_budget(make_code("rq", m=48), 48, 1152) == 1152


def test_interface_errors(corpus, queries):
    code = RaBitQ(1)
    with pytest.raises(EvaluationError, match=r"^rabitq is not fitted: call fit\(corpus_sample\) first$"):
        code.search(queries, 5)
    code.fit(corpus)
    with pytest.raises(
        EvaluationError, match=r"^rabitq: nothing indexed: call index\(corpus\) before search$"
    ):
        code.search(queries, 5)
    code.index(corpus)
    with pytest.raises(EvaluationError, match=r"^rabitq: queries has 16 dims but the code was fitted on 32$"):
        code.search(queries[:, :16], 5)
    with pytest.raises(EvaluationError, match=r"^rabitq: k must be a positive integer, got 0$"):
        code.search(queries, 0)
    with pytest.raises(EvaluationError, match=r"^rabitq corpus_sample must be a non-empty 2-d array"):
        RaBitQ(1).fit(np.zeros((0, 4)))
    with pytest.raises(
        EvaluationError, match=r"^rabitq: rescore must be a positive shortlist size or None, got 0$"
    ):
        RaBitQ(1, rescore=0)
    with pytest.raises(EvaluationError, match=r"^rabitq: rescore shortlist 5 is shorter than k=10$"):
        RaBitQ(1, rescore=5).fit(corpus).index(corpus).search(queries, 10)
    assert code.search(queries, 10_000)[1].shape == (20, 600)  # k clipped to the corpus


def test_refit_drops_the_index(corpus, queries):
    code = ITQBinary().fit(corpus).index(corpus)
    code.fit(make_vectors(100, 32, seed=3))
    with pytest.raises(EvaluationError, match="nothing indexed"):
        code.search(queries, 5)


def test_faiss_floor_matches_pyproject_and_the_installed_faiss():
    import re
    from pathlib import Path

    pyproject = (Path(__file__).parents[4] / "pyproject.toml").read_text()
    floor = ".".join(map(str, FAISS_FLOOR))
    assert re.search(rf'"faiss-cpu>={re.escape(floor)}"', pyproject)
    assert re.search(rf'"faiss-gpu>={re.escape(floor)}"', pyproject)
    assert faiss_version() >= FAISS_FLOOR, faiss.__version__


# Each registered code, its test parameters and the faiss factory string that stores the same code.
SIZE_CASES = {
    "itq": ({}, "ITQ,LSH"),
    "rabitq": ({}, "RR,RaBitQ"),
    "rabitq2": ({}, "RR,RaBitQ2"),
    "rabitq4": ({}, "RR,RaBitQ4"),
    "sq8-quantiles": ({}, "SQ8"),
    "sq8-optim": ({}, "SQ8"),
    "sq4-quantiles": ({}, "SQ4"),
    "sq4-optim": ({}, "SQ4"),
    "rq": ({"m": 4, "iterations": 2}, "RQ4x8"),
    "lsq": ({"m": 2, "iterations": 2, "encode_iters": 1}, "LSQ2x8"),
    "prq": ({"m": 4, "splits": 2, "iterations": 2}, "PRQ2x2x8"),
    "plsq": ({"m": 4, "splits": 2, "iterations": 2, "encode_iters": 1}, "PLSQ2x2x8"),
}


def test_every_registered_code_is_size_checked():
    assert set(SIZE_CASES) == set(CODES)


@pytest.mark.parametrize("dim", [40])
@pytest.mark.parametrize("name", sorted(SIZE_CASES))
def test_bytes_per_vector_is_faiss_sa_code_size(name, dim):
    """The acceptance check of issue 14: every code's bytes per vector (the row's ``bytes``, from which its
    compression factor comes) is what faiss itself stores per vector for that code."""
    params, factory = SIZE_CASES[name]
    x = make_vectors(400, dim)
    code = make_code(name, **params).fit(x)
    # faiss's LSH index is L2 only (Hamming on the bits); the other codes are built for inner products.
    metric = faiss.METRIC_L2 if factory.endswith("LSH") else faiss.METRIC_INNER_PRODUCT
    reference = faiss.index_factory(dim, factory, metric)
    if not reference.is_trained:
        reference.train(x)
    assert code.bytes_per_vector == code.bytes_for_dim(dim) == reference.sa_code_size()
    assert code.encode(x[:5]).shape == (5, code.bytes_per_vector)
    if hasattr(code, "faiss_index"):
        assert code.faiss_index.sa_code_size() == reference.sa_code_size()


def test_every_registered_code_names_the_faiss_it_needs():
    assert set(FAISS_NEEDS) == set(CODES)
    for name, classes in FAISS_NEEDS.items():
        assert all(hasattr(faiss, cls) for cls in classes), name


def test_a_faiss_without_an_index_gets_one_message(monkeypatch):
    monkeypatch.delattr(faiss, "IndexLocalSearchQuantizer")
    message = (
        f"code 'lsq' needs faiss.IndexLocalSearchQuantizer, which this faiss {faiss.__version__} lacks: "
        "pip install 'faiss-cpu>=1.13.1'"
    )
    with pytest.raises(EvaluationError, match=f"^{re.escape(message)}$"):
        make_code("lsq", m=2)
    with pytest.raises(EvaluationError, match=f"^codes: {re.escape(message)}$"):  # when a spec is read
        EvaluationSpec(codes=[{"name": "lsq", "params": {"m": 2}}])
    monkeypatch.delattr(faiss, "IndexRaBitQ")
    with pytest.raises(EvaluationError, match=r"^code 'rabitq2' needs faiss.IndexRaBitQ, which this faiss"):
        make_code("rabitq2")
    make_code("rq", m=2)  # the others are still there

import faiss
import numpy as np
import pytest

from smec.evaluation.codes import RaBitQ, rabitq_code_size
from smec.evaluation.errors import EvaluationError
from tests.smec.evaluation.codes.vectors import make_vectors


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("dim", [32, 61, 100])
def test_bytes_match_faiss_sa_code_size(bits, dim):
    x = make_vectors(300, dim)
    code = RaBitQ(bits).fit(x)
    factory = faiss.index_factory(
        dim, "RR,RaBitQ" + ("" if bits == 1 else str(bits)), faiss.METRIC_INNER_PRODUCT
    )
    assert code.bytes_per_vector == code.faiss_index.sa_code_size() == factory.sa_code_size()
    assert code.encode(x).shape == (300, code.bytes_per_vector)


def test_code_size_counts_the_per_vector_factors():
    # 1 bit: sign bytes + 2 float32; b bits: + an error bound, the extra bits and 2 more float32.
    assert rabitq_code_size(1152, 1) == 144 + 8 == 152
    assert rabitq_code_size(1152, 2) == 144 + 12 + 144 + 8
    assert (
        rabitq_code_size(704, 1) == 96 and rabitq_code_size(304, 2) == 96 and rabitq_code_size(152, 4) == 96
    )
    assert RaBitQ(1, out_dim=128).bytes_for_dim(1152) == 24


def test_search_is_faiss_rabitq_on_the_rotated_vectors(corpus, queries):
    code = RaBitQ(2, qb=0, seed=5).fit(corpus).index(corpus)
    scores, idx = code.search(queries, 10)
    rotation = faiss.RandomRotationMatrix(32, 32)
    rotation.init(5)
    plain = faiss.IndexRaBitQ(32, faiss.METRIC_INNER_PRODUCT, 2)
    plain.train(rotation.apply(corpus))
    plain.add(rotation.apply(corpus))
    want_s, want_i = plain.search(rotation.apply(queries), 10, params=faiss.RaBitQSearchParameters(qb=0))
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-6)


def test_more_bits_estimate_inner_products_better(corpus, queries):
    true = queries @ corpus.T
    errors = []
    for bits in (1, 2, 4):
        code = RaBitQ(bits, qb=0).fit(corpus).index(corpus)
        scores, idx = code.search(queries, len(corpus))
        errors.append(np.abs(scores - np.take_along_axis(true, idx, 1)).mean())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02


def test_deterministic_and_seeded(corpus):
    a = RaBitQ(1, seed=1).fit(corpus).encode(corpus)
    np.testing.assert_array_equal(RaBitQ(1, seed=1).fit(corpus).encode(corpus), a)
    assert not np.array_equal(RaBitQ(1, seed=2).fit(corpus).encode(corpus), a)


def test_query_bits_change_the_scores(corpus, queries):
    s4, _ = RaBitQ(1, qb=4).fit(corpus).index(corpus).search(queries, 5)
    s8, _ = RaBitQ(1, qb=8).fit(corpus).index(corpus).search(queries, 5)
    sc, _ = RaBitQ(1, qb=4, centered=True).fit(corpus).index(corpus).search(queries, 5)
    assert not np.allclose(s4, s8) and not np.allclose(s4, sc)
    assert RaBitQ(1, qb=4, centered=True).scoring == "rabitq-qb4-centered"


def test_bad_parameters():
    with pytest.raises(
        EvaluationError, match=r"^rabitq: bits must be one of \[1, 2, 3, 4, 5, 6, 7, 8, 9\], got 10$"
    ):
        RaBitQ(10)
    with pytest.raises(
        EvaluationError, match=r"^rabitq: qb \(query bits\) must be in 0..8 \(0 = float query\), got 9$"
    ):
        RaBitQ(1, qb=9)
    with pytest.raises(EvaluationError, match=r"^rabitq: out_dim 64 is larger than the input dim 32$"):
        RaBitQ(1, out_dim=64).fit(make_vectors(50, 32))


def test_old_faiss_gets_one_message(monkeypatch):
    monkeypatch.setattr(faiss, "__version__", "1.12.0")
    with pytest.raises(
        EvaluationError,
        match=r"^code 'rabitq2' needs faiss >= 1\.13\.1 \(multi-bit RaBitQ\); this is faiss 1\.12\.0: "
        r"pip install 'faiss-cpu>=1\.13\.1'$",
    ):
        RaBitQ(2)
    RaBitQ(1)  # 1-bit RaBitQ exists since faiss 1.11
    monkeypatch.delattr(faiss, "IndexRaBitQ")
    monkeypatch.setattr(faiss, "__version__", "1.10.0")
    with pytest.raises(EvaluationError, match=r"^code 'rabitq' needs faiss >= 1\.11\.0 \(IndexRaBitQ\)"):
        RaBitQ(1)

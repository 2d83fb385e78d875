import faiss
import numpy as np
import pytest

from smec.evaluation.codes import AdditiveCode
from smec.evaluation.errors import EvaluationError, SmallSampleWarning
from tests.smec.evaluation.codes.vectors import brute_force, make_vectors

FAST = {"iterations": 2, "encode_iters": 1, "beam_size": 1}
# LSQ solves a (256 m)^2 linear system per training round: keep m tiny so the tests stay fast.
M = {"rq": 4, "lsq": 2}


@pytest.fixture(scope="module")
def sample():
    return make_vectors(400, 16)


@pytest.mark.parametrize("kind", ["rq", "lsq"])
def test_bytes_match_faiss_sa_code_size(sample, kind):
    m = M[kind]
    code = AdditiveCode(kind, m, **FAST).fit(sample)
    reference = faiss.index_factory(16, f"{kind.upper()}{m}x8", faiss.METRIC_INNER_PRODUCT)
    assert code.bytes_per_vector == code.faiss_index.sa_code_size() == reference.sa_code_size() == m
    assert code.encode(sample).shape == (400, m)


@pytest.mark.parametrize(("kind", "factory"), [("rq", "PRQ2x2x8"), ("lsq", "PLSQ2x2x8")])
def test_product_variants_split_the_input(sample, kind, factory):
    code = AdditiveCode(kind, 4, splits=2, **FAST).fit(sample)
    reference = faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)
    assert code.bytes_per_vector == code.faiss_index.sa_code_size() == reference.sa_code_size() == 4
    assert code.name == f"p{kind}" and code.scoring == f"p{kind}2x2-lut"
    queries = sample[:10]
    scores, idx = code.index(sample).search(queries, 8)
    decoded = code.faiss_index.sa_decode(code.encode(sample))
    want_s, want_i = brute_force(queries @ decoded.T, 8)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-4, atol=1e-5)
    with pytest.raises(EvaluationError, match=r"^prq: input dim 15 is not divisible by splits=2$"):
        AdditiveCode("rq", 4, splits=2).fit(sample[:, :15])
    with pytest.raises(EvaluationError, match=r"^lsq: splits must be a positive divisor of m=4, got 3$"):
        AdditiveCode("lsq", 4, splits=3)


@pytest.mark.parametrize("kind", ["rq", "lsq"])
def test_search_equals_brute_force_on_decoded_vectors(sample, kind):
    code = AdditiveCode(kind, M[kind], **FAST).fit(sample).index(sample)
    queries = sample[:10] + 0.05
    scores, idx = code.search(queries, 8)
    decoded = code.faiss_index.sa_decode(code.encode(sample))
    want_s, want_i = brute_force(queries @ decoded.T, 8)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-4, atol=1e-5)
    # More codebooks, smaller reconstruction error.
    more = AdditiveCode(kind, 2 * M[kind], **FAST).fit(sample)
    err = np.square(decoded - sample).sum(1).mean()
    err_more = np.square(more.faiss_index.sa_decode(more.encode(sample)) - sample).sum(1).mean()
    assert err_more < err


@pytest.mark.parametrize("kind", ["rq", "lsq"])
def test_deterministic_and_seeded(sample, kind):
    a = AdditiveCode(kind, M[kind], seed=1, **FAST).fit(sample).encode(sample)
    np.testing.assert_array_equal(AdditiveCode(kind, M[kind], seed=1, **FAST).fit(sample).encode(sample), a)
    assert not np.array_equal(AdditiveCode(kind, M[kind], seed=2, **FAST).fit(sample).encode(sample), a)


def test_training_subsample_is_capped(sample):
    # max_train rows of the sample are drawn (seeded), so a larger sample costs no more to fit.
    a = AdditiveCode("rq", 4, max_train=300, **FAST).fit(sample).encode(sample)
    b = AdditiveCode("rq", 4, max_train=300, **FAST).fit(np.concatenate([sample, sample[:5]])).encode(sample)
    assert a.shape == b.shape == (400, 4)


def test_bad_parameters(sample):
    with pytest.raises(EvaluationError, match=r"^additive: kind must be one of \['lsq', 'rq'\], got 'pq'$"):
        AdditiveCode("pq")
    with pytest.raises(
        EvaluationError, match=r"^rq: m \(codebooks = bytes per vector\) must be >= 1 or None, got 0$"
    ):
        AdditiveCode("rq", 0)
    with pytest.raises(EvaluationError, match=r"^lsq: iterations must be >= 1, got 0$"):
        AdditiveCode("lsq", 4, iterations=0)
    with pytest.raises(EvaluationError, match=r"^rq: beam_size must be >= 1, got 0$"):
        AdditiveCode("rq", 4, beam_size=0)
    with pytest.raises(
        EvaluationError, match=r"^rq: needs at least 256 training vectors \(256 codewords\), got 100$"
    ):
        AdditiveCode("rq", 4).fit(sample[:100])


def test_rq_says_its_small_sample_once_instead_of_faiss_flood(sample, capfd):
    # faiss's k-means prints "please provide at least 9984 training points" once per codebook; the threshold
    # only gates that print. One SmallSampleWarning names the rows instead, and faiss prints nothing.
    capfd.readouterr()
    with pytest.warns(SmallSampleWarning) as caught:
        AdditiveCode("rq", 4, **FAST).fit(sample)
    assert [str(w.message) for w in caught] == [
        "RQ trained on 400 rows (max_train); faiss recommends >= 9,984"
    ]
    assert "please provide" not in capfd.readouterr().err

import faiss
import numpy as np
import pytest

from smec.evaluation.codes import LearnedRangeSQ
from smec.evaluation.errors import EvaluationError
from smec.evaluation.quantize import ScalarQuantizer
from tests.smec.evaluation.codes.vectors import brute_force, make_vectors


@pytest.mark.parametrize(("bits", "factory"), [(8, "SQ8"), (4, "SQ4")])
@pytest.mark.parametrize("dim", [32, 33])
def test_bytes_match_faiss_sa_code_size(bits, factory, dim):
    x = make_vectors(200, dim)
    code = LearnedRangeSQ(bits, rangestat="optim" if bits == 4 else "quantiles").fit(x)
    reference = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    assert code.bytes_per_vector == code.faiss_index.sa_code_size() == reference.sa_code_size()
    assert code.encode(x).shape == (200, code.bytes_per_vector)


def test_quantile_range_is_the_trimmed_sample_range():
    x = make_vectors(1000, 8)
    code = LearnedRangeSQ(8, rangestat_arg=0.01).fit(x)
    trained = faiss.vector_to_array(code.faiss_index.sq.trained)
    ordered = np.sort(x, axis=0)
    np.testing.assert_allclose(trained[:8], ordered[10], rtol=1e-6)
    # Up to one rank: faiss's transpose replaces the sample's row 0 by zeros (see scalar.py).
    top = trained[:8] + trained[8:]
    assert np.all(top >= ordered[1000 - 2 - 10] - 1e-6) and np.all(top <= ordered[1000 - 1 - 10] + 1e-6)
    assert code.scoring == "sq-q0.01-asym"


def test_optim_range_reconstructs_better_than_min_max():
    x = make_vectors(2000, 16)
    x[0] *= 5  # one outlier stretches every min-max range
    minmax = ScalarQuantizer(4).fit(x)
    optim = LearnedRangeSQ(4, rangestat="optim").fit(x)
    err_minmax = np.square(minmax.decode(minmax.encode(x)) - x).mean()
    err_optim = np.square(optim.decode(optim.encode(x)) - x).mean()
    assert err_optim < 0.8 * err_minmax


def test_optim_failures_fall_back_to_quantile_ranges():
    # A constant dim makes faiss's 8-bit RS_optim return NaN (its min-max start has a zero step).
    x = make_vectors(2000, 8)
    x[:, 3] = 0.25
    code = LearnedRangeSQ(8, rangestat="optim").fit(x)
    trained = faiss.vector_to_array(code.faiss_index.sq.trained)
    assert np.isfinite(trained).all() and code.fallback_dims == 1
    assert code.scoring == "sq-optim(q0.001 on 1 dims)-asym"
    reference = LearnedRangeSQ(8, rangestat_arg=0.001).fit(x)
    quantile = faiss.vector_to_array(reference.faiss_index.sq.trained)
    assert trained[3] == quantile[3] and trained[8 + 3] == quantile[8 + 3]
    np.testing.assert_allclose(code.decode(code.encode(x))[:, 3], 0.25, atol=1e-6)


@pytest.mark.parametrize("scoring", ["asymmetric", "symmetric"])
def test_search_equals_brute_force_on_decoded_vectors(corpus, queries, scoring):
    code = LearnedRangeSQ(4, scoring=scoring).fit(corpus).index(corpus)
    scores, idx = code.search(queries, 15)
    decoded = code.decode(code.encode(corpus))
    q = queries if scoring == "asymmetric" else code.decode(code.encode(queries))
    want_s, want_i = brute_force(q @ decoded.T, 15)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-6)
    assert code.symmetric is (scoring == "symmetric")


@pytest.mark.parametrize("rangestat", ["quantiles", "optim"])
def test_deterministic_with_several_faiss_threads(rangestat):
    # faiss's threaded range training races (see scalar.py): the fit must not depend on the thread count.
    x = make_vectors(4000, 64)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(4)
    try:
        fits = [LearnedRangeSQ(8, rangestat=rangestat).fit(x) for _ in range(3)]
        ranges = [faiss.vector_to_array(f.faiss_index.sq.trained) for f in fits]
        assert faiss.omp_get_max_threads() == 4
    finally:
        faiss.omp_set_num_threads(before)
    for other in ranges[1:]:
        np.testing.assert_array_equal(other, ranges[0])


def test_bad_parameters():
    with pytest.raises(EvaluationError, match=r"^sq: bits must be 8 or 4, got 6$"):
        LearnedRangeSQ(6)
    with pytest.raises(
        EvaluationError, match=r"^sq: rangestat must be one of \['quantiles', 'optim'\], got 'minmax'$"
    ):
        LearnedRangeSQ(8, rangestat="minmax")
    with pytest.raises(EvaluationError, match=r"^sq: rangestat 'optim' takes no rangestat_arg"):
        LearnedRangeSQ(4, rangestat="optim", rangestat_arg=0.01)
    with pytest.raises(
        EvaluationError,
        match=r"^sq: rangestat_arg \(fraction clipped at each end\) must be in \[0, 0.5\), got 0.5$",
    ):
        LearnedRangeSQ(8, rangestat_arg=0.5)
    with pytest.raises(
        EvaluationError, match=r"^sq: scoring must be one of \['asymmetric', 'symmetric'\], got 'deq'$"
    ):
        LearnedRangeSQ(8, scoring="deq")

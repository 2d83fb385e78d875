import numpy as np
import pytest

from smec.evaluation.errors import EvaluationError
from smec.evaluation.search import (
    RunningTopK,
    choose_backend,
    rescore,
    search_hamming,
    search_inner_product,
)


def _reference(scores: np.ndarray, k: int, descending: bool = True):
    """Full sort under the tie rule: score (desc, or asc for distances), then row ascending."""
    rows = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((rows, -scores if descending else scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.fixture
def separated():
    """Well-separated data: scores are distinct with a wide margin, so any exact method must agree."""
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((400, 48)).astype(np.float32)
    queries = corpus[rng.choice(400, 30, replace=False)] + 0.1 * rng.standard_normal((30, 48)).astype(
        np.float32
    )
    return queries, corpus


def test_faiss_and_torch_rank_identically(separated):
    queries, corpus = separated
    s_f, i_f = search_inner_product(queries, corpus, 25, backend="faiss")
    s_t, i_t = search_inner_product(queries, corpus, 25, backend="torch", chunk_size=7)
    ref_s, ref_i = _reference(queries.astype(np.float64) @ corpus.T.astype(np.float64), 25)
    np.testing.assert_array_equal(i_f, ref_i)
    np.testing.assert_array_equal(i_t, ref_i)
    np.testing.assert_allclose(s_f, ref_s, rtol=1e-4)
    np.testing.assert_allclose(s_t, ref_s, rtol=1e-4)
    assert s_f.dtype == np.float32 and i_f.dtype == np.int64


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_ties_including_the_kth_position_go_to_lower_rows(backend):
    rng = np.random.default_rng(1)
    # Entries in {-1, 0, 1}: integer inner products, exact in float32, with massive ties.
    corpus = rng.integers(-1, 2, (600, 6)).astype(np.float32)
    queries = rng.integers(-1, 2, (40, 6)).astype(np.float32)
    s, i = search_inner_product(queries, corpus, 50, backend=backend)
    ref_s, ref_i = _reference(queries @ corpus.T, 50)
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s)


@pytest.mark.parametrize("n_bits", [8, 64])
def test_hamming_search_is_exact_with_ties(n_bits):
    rng = np.random.default_rng(2)
    corpus = np.packbits(rng.integers(0, 2, (700, n_bits)).astype(bool), axis=1)
    queries = np.packbits(rng.integers(0, 2, (30, n_bits)).astype(bool), axis=1)
    dist, idx = search_hamming(queries, corpus, 40)
    full = np.bitwise_count(queries[:, None, :] ^ corpus[None]).sum(-1).astype(np.int64)
    ref_d, ref_i = _reference(full, 40, descending=False)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(dist, ref_d)


def test_k_is_clipped_to_the_corpus(separated):
    queries, corpus = separated
    _s, i = search_inner_product(queries, corpus[:5], 100, backend="torch")
    assert i.shape == (30, 5)
    assert sorted(i[0].tolist()) == [0, 1, 2, 3, 4]


def test_rescore_reranks_a_shortlist_by_inner_product(separated):
    queries, corpus = separated
    _, cand = search_inner_product(queries, corpus, 40, backend="faiss")
    shuffled = np.random.default_rng(3).permuted(cand, axis=1)
    shuffled = np.concatenate([np.full((30, 1), -1), shuffled], axis=1)  # an empty slot never wins
    _s, i = rescore(queries, corpus, shuffled, 10)
    _, ref_i = search_inner_product(queries, corpus, 10, backend="faiss")
    np.testing.assert_array_equal(i, ref_i)


def test_backend_choice_and_errors():
    assert choose_backend(32, 2_048) == "faiss"  # the measured rule: faiss only for narrow, small searches
    assert choose_backend(32, 65_536) == "torch"
    assert choose_backend(64, 2_048) == "torch"
    assert choose_backend(96, 100_000, "faiss") == "faiss"
    with pytest.raises(EvaluationError, match=r"unknown search backend 'gpu': expected one of"):
        choose_backend(8, 10, "gpu")
    with pytest.raises(EvaluationError, match="cannot search an empty corpus"):
        search_inner_product(np.ones((2, 4)), np.ones((0, 4)), 3)
    with pytest.raises(EvaluationError, match="queries and corpus must be 2-d with the same width"):
        search_inner_product(np.ones((2, 4)), np.ones((3, 5)), 3)


@pytest.mark.parametrize("descending", [True, False])
def test_running_top_k_equals_the_top_k_of_the_whole(descending):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 5, (6, 40)).astype(np.float32)  # ties everywhere, also at rank k
    keys = -values if descending else values
    order = np.lexsort((np.broadcast_to(np.arange(40), values.shape), keys), axis=1)[:, :9]
    top = RunningTopK(6, 9, descending=descending)
    for start in (24, 0, 8, 13):  # any order of chunks
        end = {0: 8, 8: 13, 13: 24, 24: 40}[start]
        local = np.lexsort(
            (np.broadcast_to(np.arange(end - start), (6, end - start)), keys[:, start:end]), axis=1
        )
        local = local[:, :9]
        top.add(np.take_along_axis(values[:, start:end], local, 1), local, start)
    v, i = top.result()
    np.testing.assert_array_equal(i, order)
    np.testing.assert_array_equal(v, np.take_along_axis(values, order, 1))
    with pytest.raises(EvaluationError, match="no chunk was searched"):
        RunningTopK(2, 3).result()

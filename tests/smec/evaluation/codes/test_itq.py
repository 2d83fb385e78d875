import faiss
import numpy as np
import pytest

from smec.evaluation.codes import ITQBinary
from smec.evaluation.errors import EvaluationError
from tests.smec.evaluation.codes.vectors import brute_force, make_vectors


@pytest.mark.parametrize(("dim", "out_dim", "factory"), [(32, None, "ITQ,LSH"), (48, 16, "ITQ16,LSH")])
def test_bytes_match_faiss_itq_lsh(dim, out_dim, factory):
    x = make_vectors(400, dim)
    code = ITQBinary(out_dim).fit(x)
    reference = faiss.index_factory(dim, factory)
    reference.train(x)
    assert code.bytes_per_vector == reference.sa_code_size() == (out_dim or dim) // 8
    assert code.encode(x).shape == (400, code.bytes_per_vector)
    assert code.bytes_for_dim(dim) == code.bytes_per_vector and code.extra_bytes_per_vector == 0


def test_hamming_ranking_equals_numpy_popcount(corpus, queries):
    code = ITQBinary().fit(corpus).index(corpus)
    scores, idx = code.search(queries, 25)
    bits_q = np.unpackbits(code.encode(queries), axis=1).astype(np.int64)
    bits_c = np.unpackbits(code.encode(corpus), axis=1).astype(np.int64)
    hamming = (bits_q[:, None, :] != bits_c[None]).sum(-1)
    want_s, want_i = brute_force(1.0 - 2.0 * hamming / 32, 25)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(scores, want_s)


def test_same_hamming_distances_as_faiss_itq_lsh(corpus, queries):
    # faiss's "ITQ,LSH" (ITQ seed 123, 50 rounds) stores the same sign bits in another bit order.
    reference = faiss.index_factory(32, "ITQ,LSH")
    reference.train(corpus)
    reference.add(corpus)
    dist, _ = reference.search(queries, 10)
    scores, _ = ITQBinary(seed=123, max_iter=50).fit(corpus).index(corpus).search(queries, 10)
    np.testing.assert_array_equal(np.round((1.0 - scores) * 32 / 2).astype(int), dist.astype(int))


def test_itq_beats_plain_signs_on_quantisation_error(corpus):
    # ITQ's rotation is chosen to bring the centred data close to its signs: less loss than no rotation.
    code = ITQBinary().fit(corpus)
    centred = corpus - corpus.mean(0)
    rotated = code._transform.apply(corpus)
    loss_itq = np.square(np.sign(rotated) - rotated / np.abs(rotated).mean()).mean()
    loss_sign = np.square(np.sign(centred) - centred / np.abs(centred).mean()).mean()
    assert loss_itq < loss_sign


def test_deterministic_and_seeded(corpus):
    a = ITQBinary(seed=3).fit(corpus).encode(corpus)
    np.testing.assert_array_equal(ITQBinary(seed=3).fit(corpus).encode(corpus), a)
    assert not np.array_equal(ITQBinary(seed=4).fit(corpus).encode(corpus), a)


def test_bad_parameters():
    with pytest.raises(
        EvaluationError, match=r"^itq: out_dim must be a positive multiple of 8 \(bits per byte\), got 12$"
    ):
        ITQBinary(12)
    with pytest.raises(EvaluationError, match=r"^itq: out_dim 64 is larger than the input dim 32$"):
        ITQBinary(64).fit(make_vectors(100, 32))
    with pytest.raises(
        EvaluationError, match=r"^itq: input dim must be a multiple of 8 without out_dim, got 30$"
    ):
        ITQBinary().fit(make_vectors(100, 30))
    with pytest.raises(
        EvaluationError, match=r"^itq: max_iter and max_train_per_dim must be >= 1, got 0 and 10$"
    ):
        ITQBinary(max_iter=0)

import numpy as np
import pytest

from smec.evaluation.errors import EvaluationError
from smec.evaluation.quantize import (
    BinaryQuantizer,
    ScalarQuantizer,
    bits_per_vector,
    check_precision,
    compression_factor,
    l2_normalize,
)


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((500, 24)) * np.linspace(0.1, 3.0, 24)).astype(np.float32)


@pytest.mark.parametrize("bits", [8, 4])
def test_scalar_round_trip_within_half_a_step(sample, bits):
    sq = ScalarQuantizer(bits).fit(sample)
    codes = sq.encode(sample)
    assert codes.dtype == np.uint8 and codes.shape == (500, 24 * bits // 8)
    err = np.abs(sq.decode(codes) - sample)
    assert np.all(err <= sq.step / 2 + 1e-6)
    np.testing.assert_allclose(sq.vmin, sample.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(sq.step, (sample.max(axis=0) - sample.min(axis=0)) / (2**bits - 1), rtol=1e-5)


def test_scalar_clips_out_of_range_queries(sample):
    sq = ScalarQuantizer(8).fit(sample)
    far = sample[:3] * 10
    decoded = sq.decode(sq.encode(far))
    top = sq.vmin + 255.5 * sq.step  # centre of the last bin
    assert np.all(decoded <= top + 1e-5) and np.all(decoded >= sq.vmin)


def test_binary_median_thresholds_balance_bits(sample):
    bq = BinaryQuantizer("median").fit(sample)
    bits = np.unpackbits(bq.encode(sample), axis=1)
    assert bits.shape == (500, 24)
    np.testing.assert_allclose(bits.mean(axis=0), 0.5, atol=0.01)
    signs = BinaryQuantizer("sign").fit(sample)
    np.testing.assert_array_equal(np.unpackbits(signs.encode(sample), axis=1), (sample > 0).astype(np.uint8))


def test_binary_packing_and_hamming_identity(sample):
    bq = BinaryQuantizer("sign").fit(sample)
    a, b = bq.encode(sample[:5]), bq.encode(sample[5:10])
    pm_a, pm_b = BinaryQuantizer.unpack_signs(a), BinaryQuantizer.unpack_signs(b)
    hamming = np.bitwise_count(a[:, None, :] ^ b[None]).sum(-1).astype(np.int64)
    np.testing.assert_array_equal(pm_a @ pm_b.T, 24 - 2 * hamming)


def test_compression_arithmetic_for_1536_input():
    assert compression_factor(1536, bits_per_vector("int8", 128)) == 48
    assert compression_factor(1536, bits_per_vector("binary", 1024)) == 48
    assert compression_factor(1536, bits_per_vector("int4", 256)) == 48
    assert compression_factor(1536, bits_per_vector("float32", 32)) == 48
    assert compression_factor(1536, bits_per_vector("int8", 64)) == 96
    assert compression_factor(1536, bits_per_vector("binary", 512)) == 96
    assert bits_per_vector("float32", 1536) == 32 * 1536


def test_errors():
    with pytest.raises(
        EvaluationError,
        match=r"unknown precision 'fp16': valid precisions are \['float32', 'int8', 'int4', 'binary'\]",
    ):
        check_precision("fp16")
    with pytest.raises(EvaluationError, match="binary precision needs a dim that is a multiple of 8, got 12"):
        BinaryQuantizer().fit(np.ones((4, 12), dtype=np.float32))
    with pytest.raises(EvaluationError, match="ScalarQuantizer bits must be 8 or 4, got 2"):
        ScalarQuantizer(2)
    with pytest.raises(EvaluationError, match="ScalarQuantizer is not fitted"):
        ScalarQuantizer(8).encode(np.ones((2, 8), dtype=np.float32))
    with pytest.raises(EvaluationError, match="x has 16 dims but the quantizer was fitted on 8"):
        BinaryQuantizer().fit(np.ones((4, 8))).encode(np.ones((2, 16)))
    with pytest.raises(EvaluationError, match="binary threshold must be one of"):
        BinaryQuantizer("mean")


def test_l2_normalize_keeps_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])

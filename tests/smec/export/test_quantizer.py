"""The exported quantiser restores the fitted faiss state exactly."""

import numpy as np
import pytest

from smec.evaluation.quantize import ScalarQuantizer
from smec.export.quantizer import fitted_state, restore_scalar_quantizer


@pytest.mark.parametrize("bits", [8, 4])
def test_a_restored_scalar_quantizer_gives_the_fitted_codes(bits):
    rng = np.random.default_rng(0)
    sample, x = rng.standard_normal((50, 12)), 1.5 * rng.standard_normal((40, 12))  # x leaves the range
    fitted = ScalarQuantizer(bits).fit(sample)
    restored = restore_scalar_quantizer(bits, fitted_state(fitted)["trained"])
    np.testing.assert_array_equal(restored.encode(x), fitted.encode(x))
    codes = fitted.encode(x)
    np.testing.assert_array_equal(restored.decode(codes), fitted.decode(codes))
    np.testing.assert_array_equal(restored.vmin, fitted.vmin)
    assert restored.code_size == fitted.code_size == (12 if bits == 8 else 6)

"""The one seeded row sample: the rows every "fit on a corpus sample" uses, whoever asks."""

import numpy as np
import pytest

from smec.sampling import sample_rows


def test_a_sample_is_sorted_seeded_and_without_repeats():
    rows = sample_rows(1000, 50, seed=3)
    assert len(rows) == 50 and len(set(rows.tolist())) == 50 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, sample_rows(1000, 50, seed=3))
    assert not np.array_equal(rows, sample_rows(1000, 50, seed=4))
    # The rule the baselines, the calibration sample and the codes used before they shared this function.
    np.testing.assert_array_equal(
        rows, np.sort(np.random.default_rng(3).choice(1000, size=50, replace=False))
    )


def test_a_sample_as_large_as_the_rows_is_every_row():
    np.testing.assert_array_equal(sample_rows(20, 20), np.arange(20))
    np.testing.assert_array_equal(sample_rows(20, 10_000), np.arange(20))
    np.testing.assert_array_equal(sample_rows(20, None), np.arange(20))
    with pytest.raises(ValueError, match="a row sample needs at least 1 row, got 0"):
        sample_rows(20, 0)

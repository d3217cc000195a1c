"""Confidence intervals, checked against published values."""

import math

import pytest

from pbw.evaluation import mean_interval, wilson_interval


@pytest.mark.parametrize(
    "x, n, lo, hi",
    [  # Newcombe (1998), Stat. Med. 17:857, Table II, method 3
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe(x, n, lo, hi):
    got = wilson_interval(x, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_mean_interval_by_hand():
    # mean 2, sample sd 1 (values 1, 2, 3), n = 3: 2 +- t(0.975, 2) / sqrt(3), t = 4.303 (any t table)
    lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert (lo, hi) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)), abs=1e-6)
    lo, hi = mean_interval([0.0, 1.0] * 50)  # n = 100: beyond the table, the normal's 1.96
    assert hi - 0.5 == pytest.approx(1.959964 * math.sqrt(50 * 0.25 * 2 / 99) / 10, abs=1e-6)
    assert all(math.isnan(v) for v in mean_interval([1.0]))

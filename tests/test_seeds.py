"""Across-seed aggregation (``leaderboard.seeds``) against hand computations, a seed set of 1
included."""

from __future__ import annotations

import math

import pytest

from leaderboard.seeds import across, holds_in, spearman

T_975 = {1: 12.706204736, 2: 4.302652730}  # Student t quantiles, from printed tables


def test_two_seeds_mean_t_interval_and_within_run_error() -> None:
    agg = across([0.4, 0.6], [0.03, 0.04])
    sd = math.sqrt(((0.4 - 0.5) ** 2 + (0.6 - 0.5) ** 2) / 1)
    half = T_975[1] * sd / math.sqrt(2)
    assert agg.mean == pytest.approx(0.5)
    assert agg.interval == pytest.approx((0.5 - half, 0.5 + half), rel=1e-8)
    assert agg.within == pytest.approx(math.sqrt(0.03**2 + 0.04**2) / 2)  # 0.025
    assert agg.text() == f"0.50 [{0.5 - half:.2f}, {0.5 + half:.2f}] ±0.03"
    assert agg.holds(lambda v: v >= 0.5) == 1 and holds_in(1, 2) == "1/2 seeds"


def test_three_seeds() -> None:
    agg = across([1.0, 2.0, 3.0])
    half = T_975[2] * 1.0 / math.sqrt(3)
    assert agg.interval == pytest.approx((2 - half, 2 + half), rel=1e-8)
    assert agg.within is None and agg.text(1) == f"2.0 [{2 - half:.1f}, {2 + half:.1f}]"


def test_a_seed_set_of_one_has_no_interval() -> None:
    agg = across([0.4], [0.03])
    assert agg.n == 1 and agg.mean == 0.4 and agg.interval is None
    assert agg.within == pytest.approx(0.03)
    assert agg.text() == "0.40 ±0.03 (1 seed)" and holds_in(1, 1) == "1/1 seed"
    with pytest.raises(ValueError, match="at least one"):
        across([])
    with pytest.raises(ValueError, match="2 values but 1 standard errors"):
        across([0.1, 0.2], [0.1])


def test_spearman_with_ties_and_the_undefined_cases() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks [1.5, 1.5, 3, 4] and [1, 2, 3, 4]: covariance 4.5, variances 4.5 and 5
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([0, 0, 0, 0], [1, 2, 3, 4]) is None  # no order to agree with
    assert spearman([1, 2], [1, 2]) is None
    with pytest.raises(ValueError, match="rankings of 3 and 2"):
        spearman([1, 2, 3], [1, 2])


def test_a_bounded_quantity_keeps_its_interval_in_range() -> None:
    rate = across([0.1, 0.9], bounds=(0.0, 1.0))
    assert rate.interval == (0.0, 1.0) and across([0.1, 0.9]).interval[0] < -4
    assert across([0.5, 0.52], bounds=(0.0, 1.0)).interval == pytest.approx(
        (0.51 - T_975[1] * 0.01, 0.51 + T_975[1] * 0.01))  # inside the range: unchanged

"""esper_lab.stats: the paired t interval, pinned on numbers worked by hand."""

from __future__ import annotations

import math

import pytest

from esper_lab.stats import LEVEL, NO_INTERVAL, Interval, paired_difference, t_interval, t_quantile


@pytest.mark.parametrize("p, df, table", [
    (0.975, 1, 12.7062047362), (0.975, 4, 2.7764451052), (0.975, 19, 2.0930240544), (0.95, 4, 2.1318467863),
])
def test_t_quantile_matches_the_printed_table(p, df, table):
    assert t_quantile(p, df) == pytest.approx(table, rel=1e-9)


def test_paired_interval_worked_by_hand():
    """d = a - b = [1, 2, 3, 4, 5]: mean 3, sample sd sqrt(10 / 4) = 1.5811, standard error sqrt(2.5 / 5) = sqrt(0.5),
    half width t(0.975, 4) * sqrt(0.5) = 2.7764451052 * 0.7071067812 = 1.9632431615."""
    d = paired_difference([3, 5, 7, 9, 11], [2, 3, 4, 5, 6])
    assert (d.n, d.mean, d.level, d.note) == (5, 3.0, LEVEL, "")
    assert d.std == pytest.approx(math.sqrt(2.5))
    assert d.low == pytest.approx(3 - 1.9632431615, abs=1e-9)
    assert d.high == pytest.approx(3 + 1.9632431615, abs=1e-9)


def test_two_episodes_use_one_degree_of_freedom():
    """d = [0, 2]: mean 1, sd sqrt(2), standard error 1, so the interval is 1 -+ t(0.975, 1) = 1 -+ 12.7062047362."""
    d = paired_difference([10.0, 12.0], [10.0, 10.0])
    assert d.mean == 1.0 and d.std == pytest.approx(math.sqrt(2))
    assert (d.low, d.high) == pytest.approx((1 - 12.7062047362, 1 + 12.7062047362), abs=1e-9)


def test_another_level_narrows_the_interval():
    d = t_interval([1, 2, 3, 4, 5], level=0.90)
    assert (d.low, d.high) == pytest.approx((3 - 2.1318467863 * math.sqrt(0.5), 3 + 2.1318467863 * math.sqrt(0.5)))
    assert d.level == 0.90


def test_zero_variance_gives_a_point_interval():
    d = paired_difference([5.0, 6.0, 7.0], [3.0, 4.0, 5.0])
    assert (d.mean, d.std, d.low, d.high) == (2.0, 0.0, 2.0, 2.0)


def test_one_episode_has_no_interval_and_says_so():
    d = paired_difference([4.0], [1.5])
    assert d == Interval(1, 2.5, None, None, None, LEVEL, NO_INTERVAL)
    assert "fewer than 2 episodes" in d.note


def test_as_dict_is_json_ready():
    assert t_interval([1.0, 3.0]).as_dict().keys() == {"n", "mean", "std", "low", "high", "level", "note"}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="no values"):
        t_interval([])
    with pytest.raises(ValueError, match="differ in length: 2 and 1"):
        paired_difference([1.0, 2.0], [1.0])

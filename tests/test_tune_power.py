"""`seeds_needed`: the seeds per arm `namexp tune --arms` reports, checked against statsmodels' own power function.

The long arms test once crashed on two arms whose final values were far apart (Cohen's d near 10): statsmodels'
noncentral t returns NaN there and its solver searches above two seeds.
"""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.power import TTestIndPower

from namexp.tune.arms import ALPHA, POWER, seeds_needed


def power_at(n: float, a: list[float], b: list[float]) -> float:
    pooled = math.sqrt((sum((x - sum(a) / len(a)) ** 2 for x in a) + sum((x - sum(b) / len(b)) ** 2 for x in b))
                       / (len(a) + len(b) - 2))  # fmt: skip
    d = abs(sum(a) / len(a) - sum(b) / len(b)) / pooled
    # statsmodels' two-sided power, whose lower tail is NaN at large d (that tail is 0 to float precision there)
    two_sided = TTestIndPower().power(effect_size=d, nobs1=n, alpha=ALPHA, ratio=1.0, alternative="two-sided")
    upper = TTestIndPower().power(effect_size=d, nobs1=n, alpha=ALPHA / 2, ratio=1.0, alternative="larger")
    return upper if math.isnan(two_sided) else two_sided


@pytest.mark.parametrize("a, b", [([0.50, 0.52], [0.40, 0.41]), ([0.90, 0.91, 0.905], [0.10, 0.12, 0.11])])
def test_a_huge_difference_needs_two_seeds_not_nan(a, b):
    assert seeds_needed(a, b) == 2
    assert power_at(2, a, b) >= POWER


@pytest.mark.parametrize("a, b", [([0.50, 0.53, 0.47], [0.49, 0.52, 0.46]), ([0.60, 0.64], [0.58, 0.61])])
def test_a_small_difference_gets_the_fewest_seeds_with_80_percent_power(a, b):
    n = seeds_needed(a, b)
    assert n is not None and n > 2 and n == int(n)
    assert power_at(n, a, b) >= POWER > power_at(n - 1, a, b)


def test_no_difference_needs_infinitely_many_and_one_value_cannot_tell():
    assert seeds_needed([0.5, 0.6], [0.6, 0.5]) == math.inf
    assert seeds_needed([0.5], [0.4, 0.45]) is None
    assert seeds_needed([0.5, 0.5], [0.4, 0.4]) is None  # no spread: no effect size

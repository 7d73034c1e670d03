"""Seed-paired differences (lensrl.research.stats), with hand-worked values.

Student t with 2 degrees of freedom has a closed form, used throughout: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)),
so t_{0.975,2} solves t / sqrt(t^2 + 2) = 0.95: t^2 = 2 * 0.9025 / 0.0975 = 18.513, t = 4.3027; t_{0.80,2}
solves t / sqrt(t^2 + 2) = 0.6: t^2 = 0.72 / 0.64 = 1.125, t = 1.0607; the two-sided p of t is
1 - t / sqrt(t^2 + 2).
"""

import json
import math

import pytest

from lensrl.research.stats import minimal_detectable_difference, paired_difference


def test_paired_difference_by_hand():
    # d = [1, 2, 3]: mean 2, sd 1, n 3, SE 1/sqrt(3) = 0.57735; CI 2 +- 4.3027 * 0.57735 = 2 +- 2.4841
    # t = 2 / 0.57735 = 3.4641, p = 1 - 3.4641 / sqrt(12 + 2) = 1 - 0.92582 = 0.07418
    # MDE = (4.3027 + 1.0607) * 0.57735 = 3.0966
    r = paired_difference([10.0, 20.0, 30.0], [11.0, 22.0, 33.0])
    assert r.diff == pytest.approx(2.0) and r.sd == pytest.approx(1.0) and r.n == 3
    assert r.ci_low == pytest.approx(2 - 2.4841, abs=1e-4) and r.ci_high == pytest.approx(2 + 2.4841, abs=1e-4)
    assert r.p == pytest.approx(0.07418, abs=1e-5) and not r.significant
    assert r.mde == pytest.approx(3.0966, abs=1e-4)


def test_pairing_removes_what_a_seed_does_to_both_arms():
    # d = [2, 3, 4]: mean 3, sd 1, CI 3 +- 2.4841 = (0.5159, 5.4841), excludes 0; t = 5.1962,
    # p = 1 - 5.1962 / sqrt(27 + 2) = 0.03510. Unpaired, the arms' seed spread (sd 10) would hide it.
    r = paired_difference([10.0, 20.0, 30.0], [12.0, 23.0, 34.0])
    assert r.significant and r.ci_low == pytest.approx(0.5159, abs=1e-4)
    assert r.p == pytest.approx(0.03510, abs=1e-5)
    # the order of the pairs matters: the same values paired otherwise, d = [24, 3, -16], say nothing
    assert not paired_difference([10.0, 20.0, 30.0], [34.0, 23.0, 14.0]).significant


def test_one_pair_has_no_interval_and_never_crashes():
    r = paired_difference([0.3], [0.5])
    assert r.diff == pytest.approx(0.2) and r.n == 1 and not r.significant
    assert all(math.isnan(v) for v in (r.sd, r.ci_low, r.ci_high, r.p, r.mde))
    j = r.to_json()
    assert j["ci_low"] is None and j["mde"] is None and j["p"] is None and j["n"] == 1
    json.dumps(j, allow_nan=False)  # valid JSON, no NaN


def test_identical_differences_and_bad_input():
    same = paired_difference([1.0, 1.0], [1.0, 1.0])  # every seed equal: d = [0, 0]
    assert same.p == 1.0 and not same.significant and same.ci_low == same.ci_high == 0.0 and same.mde == 0.0
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        paired_difference([], [])


def test_mde_by_hand_and_shrinking_with_n():
    # n = 3, sd 2: (4.3027 + 1.0607) * 2 / sqrt(3) = 6.1931
    assert minimal_detectable_difference(2.0, 3) == pytest.approx(6.1931, abs=1e-4)
    # large n approaches (1.96 + 0.8416) * sd / sqrt(n): n = 10000, sd 1 -> 0.028016 (t quantiles a bit larger)
    assert minimal_detectable_difference(1.0, 10_000) == pytest.approx(0.028016, abs=2e-5)
    assert math.isnan(minimal_detectable_difference(1.0, 1))

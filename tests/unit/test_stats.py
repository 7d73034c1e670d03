"""Seed-paired differences (lensrl.research.stats), with hand-worked values.

Student t with 2 degrees of freedom has a closed form, used throughout: F(t) = 1/2 + t / (2 sqrt(t^2 + 2)),
so t_{0.975,2} solves t / sqrt(t^2 + 2) = 0.95: t^2 = 2 * 0.9025 / 0.0975 = 18.513, t = 4.3027; t_{0.80,2}
solves t / sqrt(t^2 + 2) = 0.6: t^2 = 0.72 / 0.64 = 1.125, t = 1.0607; the two-sided p of t is
1 - t / sqrt(t^2 + 2).
"""

import json
import math

import pytest

from lensrl.research.stats import (
    RELATIVE_TOLERANCE,
    PairedDifference,
    minimal_detectable_difference,
    paired_difference,
    sign_flip_p,
    tolerance,
)


def test_paired_difference_by_hand():
    # d = [1, 2, 3]: mean 2, sd 1, n 3, SE 1/sqrt(3) = 0.57735; CI 2 +- 4.3027 * 0.57735 = 2 +- 2.4841
    # t = 2 / 0.57735 = 3.4641, p = 1 - 3.4641 / sqrt(12 + 2) = 1 - 0.92582 = 0.07418
    # MDE = (4.3027 + 1.0607) * 0.57735 = 3.0966
    r = paired_difference([10.0, 20.0, 30.0], [11.0, 22.0, 33.0])
    assert r.diff == pytest.approx(2.0) and r.sd == pytest.approx(1.0) and r.n == 3
    assert r.ci_low == pytest.approx(2 - 2.4841, abs=1e-4) and r.ci_high == pytest.approx(2 + 2.4841, abs=1e-4)
    assert r.p == pytest.approx(0.07418, abs=1e-5) and not r.significant
    assert r.mde == pytest.approx(3.0966, abs=1e-4)
    # exact sign-flip test: of the 8 sign assignments of (1, 2, 3) only (+,+,+) and (-,-,-) reach |mean| 2
    assert r.p_exact == pytest.approx(0.25) and not r.constant and not r.identical


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
    assert r.diff == pytest.approx(0.2) and r.n == 1 and not r.significant and not r.constant
    assert all(math.isnan(v) for v in (r.sd, r.ci_low, r.ci_high, r.p, r.p_exact, r.mde))
    j = r.to_json()
    assert j["ci_low"] is None and j["mde"] is None and j["p"] is None and j["p_exact"] is None and j["n"] == 1
    json.dumps(j, allow_nan=False)  # valid JSON, no NaN
    assert math.isnan(sign_flip_p([0.2])) and math.isnan(sign_flip_p([]))


def test_identical_arms_are_constant_without_a_test():
    same = paired_difference([0.5, 0.25, 1.0], [0.5, 0.25, 1.0])  # d = [0, 0, 0]
    assert same.constant and same.identical and same.diff == 0.0 and same.sd == 0.0
    assert same.ci_low == same.ci_high == 0.0 and not same.significant
    assert math.isnan(same.p) and math.isnan(same.mde)  # no spread: no t test, no resolution to report
    assert same.p_exact == 1.0  # every sign assignment of zeros has |mean| 0 >= 0
    j = same.to_json()
    assert j["constant"] is True and j["p"] is None and j["mde"] is None and j["p_exact"] == 1.0
    json.dumps(j, allow_nan=False)
    two = paired_difference([1.0, 1.0], [1.0, 1.0])  # was p = 1.0 and MDE 0.0 from the se == 0 branch
    assert two.identical and math.isnan(two.p) and math.isnan(two.mde) and two.p_exact == 1.0


def test_a_constant_difference_of_round_off_spread_is_no_significance():
    # 0.7425 - 0.73 = 0.012500000000000067 but 0.755 - 0.7425 = 0.7675 - 0.755 = 0.012499999999999956:
    # the same step in every seed, with an sd of 6.4e-17 from round-off alone. A t test would divide by
    # it (t ~ 3e14, p ~ 1e-26, MDE ~ 2e-16); the difference is a constant instead.
    reference, arm = [0.73, 0.7425, 0.755], [0.7425, 0.755, 0.7675]
    d = [a - r for r, a in zip(reference, arm)]
    assert 0 < max(d) - min(d) < 1e-15  # really float noise, not an exact 0
    r = paired_difference(reference, arm)
    assert r.constant and not r.identical and r.diff == pytest.approx(0.0125) and r.sd == 0.0
    assert r.ci_low == r.ci_high == r.diff and not r.significant
    assert math.isnan(r.p) and math.isnan(r.mde)
    # all three d_s positive: only (+,+,+) and (-,-,-) reach the observed |mean|, p = 2 / 2^3
    assert r.p_exact == pytest.approx(0.25)
    # the committed case (results/signs/remedies, lens vs grpo, overall pass@1): +0.000125 in every seed
    r = paired_difference([0.7395, 0.752375, 0.73275], [0.739625, 0.7525, 0.732875])
    assert r.constant and r.diff == pytest.approx(0.000125) and r.p_exact == pytest.approx(0.25)
    assert PairedDifference.from_json(r.to_json()).identical is False


def test_a_spread_just_above_the_tolerance_is_tested():
    # rates: the tolerance is 1e-9 * max(1, 0.1) = 1e-9; d = [0.1, 0.1 + 2e-9, 0.1 - 2e-9], sd 2e-9
    assert tolerance([0.0, 0.0, 0.0], [0.1, 0.1, 0.1]) == RELATIVE_TOLERANCE == 1e-9
    r = paired_difference([0.0, 0.0, 0.0], [0.1, 0.1 + 2 * RELATIVE_TOLERANCE, 0.1 - 2 * RELATIVE_TOLERANCE])
    assert not r.constant and r.sd > RELATIVE_TOLERANCE and r.p < 1e-6 and r.significant


def test_the_tolerance_follows_the_scale_of_the_values():
    # around 1e8 one ulp is 2^-26 = 1.49e-8, above the old absolute 1e-9: one ulp of noise in each value
    # must not read as a difference. The tolerance is 1e-9 * 1e8 = 0.1 (1e8 + 3 ulps is the largest value:
    # 1e-9 * (1e8 + 4.5e-8) = 0.1 up to 4.5e-17).
    ulp = 2.0**-26
    assert 1e8 + ulp != 1e8 and 1e8 + ulp / 2 == 1e8  # really round-off level
    reference = [1e8, 1e8, 1e8]
    assert tolerance(reference, [1e8 + 3 * ulp]) == pytest.approx(0.1, rel=1e-12)
    # d = [0, ulp, 0]: sd = ulp / sqrt(3) = 8.6e-9, above 1e-9 (a t test on it would give p = 0.42)
    # but far below 0.1: constant, and the mean ulp / 3 = 5e-9 is within 0.1: identical, diff 0.0
    noise = paired_difference(reference, [1e8, 1e8 + ulp, 1e8])
    assert noise.constant and noise.identical and noise.diff == 0.0 and noise.sd == 0.0
    assert math.isnan(noise.p) and not noise.significant and noise.p_exact == 1.0
    assert PairedDifference.from_json(noise.to_json()).identical  # survives JSON without the scale
    # a constant shift of 3 ulps with 1 ulp of noise: d = [3, 4, 3] ulps, sd 8.6e-9 <= 0.1: constant, and
    # |mean| = 3.33 ulps = 5.0e-8 <= 0.1: identical as well (a shift of round-off size)
    shift = paired_difference(reference, [1e8 + 3 * ulp, 1e8 + 4 * ulp, 1e8 + 3 * ulp])
    assert shift.identical
    # a real difference at that scale, d = [1, 2, 3]: sd 1 > 0.1, tested as in test_paired_difference_by_hand
    real = paired_difference(reference, [1e8 + 1, 1e8 + 2, 1e8 + 3])
    assert not real.constant and real.diff == pytest.approx(2.0) and real.p == pytest.approx(0.07418, abs=1e-5)
    # a constant shift of 1 at scale 1e8 (d = [1, 1, 1]): constant, not identical; p_exact 2 / 8
    one = paired_difference(reference, [1e8 + 1, 1e8 + 1, 1e8 + 1])
    assert one.constant and not one.identical and one.diff == 1.0 and one.p_exact == pytest.approx(0.25)


def test_sign_flip_slack_follows_the_scale():
    # u = 2^-26, one ulp at 1e8. d = [1e8 + 2u, -1e8, 2e8]; the slack by default is 1e-9 * max(1, 2e8) = 0.2.
    # The signed sums (signs of the first two; the mirrors give the same magnitudes):
    #   (+, +, +) 2e8 + 2u (observed), (+, +, -) -(2e8 - 2u), (+, -, +) 4e8 + 2u, (+, -, -) 2u.
    # 2e8 - 2u falls short of the observed |sum| by 4u = 6e-8, round-off at this scale: with the slack
    # 3 of 4 (and their mirrors) reach it, p = 6 / 8; without it (or with the old absolute 1e-9), 4 / 8.
    u = 2.0**-26
    d = [1e8 + 2 * u, -1e8, 2e8]
    assert sign_flip_p(d) == pytest.approx(0.75)
    assert sign_flip_p(d, slack=1e-9) == sign_flip_p(d, slack=0.0) == pytest.approx(0.5)


def test_non_finite_inputs_are_a_clear_error_naming_the_seeds():
    with pytest.raises(ValueError, match=r"non-finite at position \(seed index\) arm\[1\] = nan"):
        paired_difference([0.5, 0.6, 0.7], [0.5, math.nan, 0.8])
    with pytest.raises(ValueError, match=r"reference\[0\] = inf, arm\[2\] = -inf"):
        paired_difference([math.inf, 0.6, 0.7], [0.5, 0.6, -math.inf])
    with pytest.raises(ValueError, match=r"sign_flip_p needs finite values; .* d\[2\] = nan"):
        sign_flip_p([0.1, 0.2, math.nan])
    with pytest.raises(ValueError, match=r"overflows"):  # each value finite, their difference not
        paired_difference([-1.7e308, 0.0], [1.7e308, 0.0])
    with pytest.raises(ValueError, match=r"arm\[0\] = nan"):  # one pair: no stdev to crash in, still an error
        paired_difference([0.5], [math.nan])


def test_sign_flip_p_by_hand():
    # d = [1, -1, 2, 3]: observed |sum| 5 (|mean| 1.25). The sign-flip set is that of the magnitudes
    # (1, 1, 2, 3); its 16 sums +-1 +-1 +-2 +-3, grouped by the signs of 2 and 3:
    #   (+2, +3):  5 + {2, 0, 0, -2} = 7, 5, 5, 3   -> 3 reach |sum| >= 5
    #   (-2, +3):  1 + {2, 0, 0, -2} = 3, 1, 1, -1  -> 0
    #   (+2, -3): -1 + {2, 0, 0, -2} = 1, -1, -1, -3 -> 0
    #   (-2, -3): -5 + {2, 0, 0, -2} = -3, -5, -5, -7 -> 3
    # p = 6 / 16 = 0.375
    assert sign_flip_p([1.0, -1.0, 2.0, 3.0]) == pytest.approx(0.375)
    assert paired_difference([0.0] * 4, [1.0, -1.0, 2.0, 3.0]).p_exact == pytest.approx(0.375)
    # d = [1, 2, 3]: sums 6, 0, 2, -4, 4, -2, 0, -6: only +-6 reach |sum| 6, p = 2 / 8
    assert sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(0.25)
    assert sign_flip_p([-1.0, -2.0, -3.0]) == pytest.approx(0.25)  # two-sided
    # a 0 counts the same under either sign: [0, 1, 2, 3] doubles every assignment of [1, 2, 3]
    assert sign_flip_p([0.0, 1.0, 2.0, 3.0]) == pytest.approx(0.25)
    # the smallest p on 5 seeds is 2 / 32 = 0.0625: an exact test on 5 seeds never reaches 0.05
    assert sign_flip_p([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(0.0625)
    # d = [1, -1]: sums 0, 2, -2, 0; observed |sum| 0: all 4 reach it, p = 1
    assert sign_flip_p([1.0, -1.0]) == 1.0


def test_bad_input():
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

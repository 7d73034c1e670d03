"""Seed-paired differences between two arms of a study: mean, 95% t interval, p-value, and the
smallest difference the study could have detected.

Arms of a study share their seeds (the same data order and the same first samples), so seed s of
one arm is compared with seed s of the other: d_s = arm_s - reference_s. Whatever a seed does to
both arms alike (an easy data order, a lucky evaluation sample) cancels in d_s, and the test is a
one-sample Student t test of the mean of d_s against 0, with n - 1 degrees of freedom.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from scipy.stats import t as student_t

LEVEL = 0.95  # two-sided confidence of the interval and of the test
POWER = 0.80  # of the minimal detectable difference


@dataclass(frozen=True)
class PairedDifference:
    """Mean and spread of d_s = arm_s - reference_s over n paired seeds.

    `ci_low`, `ci_high`: the 95% interval diff +- t_{0.975, n-1} * sd / sqrt(n); `p`: the two-sided
    p-value of diff = 0; `significant`: the interval excludes 0 (the same as p < 0.05); `mde`: the
    minimal detectable difference (`minimal_detectable_difference`). With one pair there is no spread:
    sd, the interval, p and mde are nan (None in JSON) and `significant` is False.
    """

    diff: float
    sd: float
    n: int
    ci_low: float
    ci_high: float
    p: float
    significant: bool
    mde: float

    def to_json(self) -> dict[str, float | int | bool | None]:
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def minimal_detectable_difference(sd: float, n: int) -> float:
    """The true mean difference a paired t test on n seeds finds with 80% power at two-sided 5%:
    MDE = (t_{0.975, n-1} + t_{0.80, n-1}) * sd / sqrt(n).

    The test rejects when the observed mean is more than t_{0.975} standard errors (sd / sqrt(n)) from
    0; a true difference of MDE puts the observed mean's distribution t_{0.80} standard errors beyond
    that threshold, so it lands past it 80% of the time (the usual approximation, which uses the
    central t in place of the noncentral one). `sd` is the observed sd of the differences, itself
    noisy at small n: the MDE says which differences this study could have seen, not more. nan for
    n < 2.
    """
    if n < 2:
        return math.nan
    return float(student_t.ppf(0.5 + LEVEL / 2, n - 1) + student_t.ppf(POWER, n - 1)) * sd / math.sqrt(n)


def paired_difference(reference: list[float], arm: list[float]) -> PairedDifference:
    """The seed-paired difference arm - reference; the two lists are paired by position (seed)."""
    if len(reference) != len(arm) or not arm:
        raise ValueError(
            f"paired_difference needs two equally long, non-empty lists, got {len(reference)} and {len(arm)} values"
        )
    d = [a - r for r, a in zip(reference, arm)]
    n, diff = len(d), statistics.fmean(d)
    if n < 2:
        return PairedDifference(diff, math.nan, n, math.nan, math.nan, math.nan, False, math.nan)
    sd = statistics.stdev(d)
    se = sd / math.sqrt(n)
    half = float(student_t.ppf(0.5 + LEVEL / 2, n - 1)) * se
    if se > 0:
        p = float(2 * student_t.sf(abs(diff) / se, n - 1))
    else:  # every seed moved by exactly the same amount
        p = 1.0 if diff == 0 else 0.0
    low, high = diff - half, diff + half
    return PairedDifference(diff, sd, n, low, high, p, bool(low > 0 or high < 0), minimal_detectable_difference(sd, n))

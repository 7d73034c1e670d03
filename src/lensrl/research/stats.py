"""Seed-paired differences between two arms of a study: mean, 95% t interval, p-value, an exact
sign-flip p-value, and the smallest difference the study could have detected.

Arms of a study share their seeds (the same data order and the same first samples), so seed s of
one arm is compared with seed s of the other: d_s = arm_s - reference_s. Whatever a seed does to
both arms alike (an easy data order, a lucky evaluation sample) cancels in d_s, and the test is a
one-sample Student t test of the mean of d_s against 0, with n - 1 degrees of freedom. Beside it,
the exact paired sign-flip permutation test (`sign_flip_p`) assumes nothing about the shape of the
d_s. When the d_s do not vary (`tolerance`) there is no t test: see `PairedDifference`. A NaN or
infinite input is an error naming its positions (`check_finite`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import product

from scipy.stats import t as student_t

LEVEL = 0.95  # two-sided confidence of the interval and of the test
POWER = 0.80  # of the minimal detectable difference
# Relative to the scale of the compared values (`tolerance`). A float64 value v carries round-off of
# about 2.2e-16 * |v| per operation, so a difference of two values of scale |v| (and a mean of such
# differences over thousands of samples) is exact to ~1e-13 * |v|; 1e-9 * |v| leaves a margin of
# four orders of magnitude above that round-off while staying far below any real difference: the
# values of a study are rates in [0, 1], where the smallest real difference is one sample in the
# evaluation (~1e-4). Below scale 1 the tolerance stays 1e-9 (max(1, |v|)): for rates it is the
# absolute tolerance the committed reports were computed with, and it does not shrink to 0 when
# every value is 0. Values far below 1 in scale (not rates) should be rescaled before comparing.
RELATIVE_TOLERANCE = 1e-9


def tolerance(*values: Sequence[float]) -> float:
    """The round-off allowance of a comparison of `values`: RELATIVE_TOLERANCE * max(1, largest |value|).
    A spread of the d_s at or below it is round-off (every seed moved by the same amount); a |mean| at
    or below it is no difference at all. Around 1e8, 1e-9 * 1e8 = 0.1: noise of a few ulps (1.5e-8
    each) is round-off, not a difference."""
    return RELATIVE_TOLERANCE * max([1.0, *(abs(v) for vs in values for v in vs)])


def check_finite(name: str, **values: Sequence[float]) -> None:
    """A ValueError naming every position (seed) that holds a NaN or an infinity, in each list of
    `values` (keyword: the list's name in the message); nothing when all are finite."""
    bad = [f"{label}[{i}] = {v!r}" for label, vs in values.items() for i, v in enumerate(vs) if not math.isfinite(v)]
    if bad:
        raise ValueError(
            f"{name} needs finite values; non-finite at position (seed index) {', '.join(bad)}: "
            "a failed run or evaluation, to fix or rerun, not to average over"
        )


@dataclass(frozen=True)
class PairedDifference:
    """Mean and spread of d_s = arm_s - reference_s over n paired seeds.

    `diff`: the mean of the d_s, as computed (0.0 when `identical`); `sd`: their sample standard deviation. `ci_low`,
    `ci_high`: the 95% interval diff +- t_{0.975, n-1} * sd / sqrt(n); `p`: the two-sided t-test
    p-value of diff = 0; `significant`: the interval excludes 0 (the same as p < 0.05); `mde`: the
    minimal detectable difference (`minimal_detectable_difference`); `p_exact`: the two-sided exact
    sign-flip p-value of diff = 0 (`sign_flip_p`; never below 2 / 2^n: 0.25 at n = 3, 0.0625 at
    n = 5, so on 5 seeds or fewer it can never reach 0.05).

    `constant`: the d_s do not vary (sd <= `tolerance` of the inputs, round-off at most): every seed
    moved by the same amount, diff. There is no t test then (it would divide by a spread of round-off):
    sd is 0.0, the interval is the point ci_low = ci_high = diff, p and mde are nan (None in JSON:
    zero spread says nothing about the study's resolution), `significant` is False; `p_exact` still
    applies (2 / 2^n for a nonzero constant, all of one sign). `identical`: constant with |diff| within
    the `tolerance` of the inputs, the two arms scored the same in every seed (`p_exact` 1.0); diff is
    then 0.0 exactly, so that `identical` needs no tolerance and survives `to_json` / `from_json`.

    With one pair there is no spread: sd, the interval, p, p_exact and mde are nan (None in JSON),
    `significant` and `constant` are False.
    """

    diff: float
    sd: float
    n: int
    constant: bool
    ci_low: float
    ci_high: float
    p: float
    p_exact: float
    significant: bool
    mde: float

    @property
    def identical(self) -> bool:
        return self.constant and self.diff == 0.0

    def to_json(self) -> dict[str, float | int | bool | None]:
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, record: dict[str, float | int | bool | None]) -> PairedDifference:
        """The inverse of `to_json` (None back to nan)."""
        return cls(**{k: math.nan if v is None else v for k, v in record.items()})


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


def sign_flip_p(d: Sequence[float], slack: float | None = None) -> float:
    """The exact two-sided paired sign-flip (permutation) p-value of mean d = 0.

    If the two arms did not differ, each d_s would be as likely positive as negative: every one of the
    2^n assignments of signs to the |d_s| is equally likely. p is the share of them whose |mean| is at
    least the observed |mean| less `slack`, so that round-off does not drop the observed assignment or
    its mirror (default: `tolerance(d)`; `paired_difference` passes the tolerance of the compared
    values, whose scale sets the round-off of the d_s). A d_s of 0 counts the same under either sign.
    The smallest p is 2 / 2^m with m the number of nonzero d_s (all of one sign: only the observed
    signs and their mirror reach the observed |mean|): 0.25 at 3 seeds, 0.0625 at 5, so 5 seeds or
    fewer can never reach 0.05. nan for n < 2. Enumerates all 2^n assignments: fine for the few seeds
    of a study (n <= ~20). A NaN or infinite d_s is a ValueError naming its position.
    """
    check_finite("sign_flip_p", d=d)
    n = len(d)
    if n < 2:
        return math.nan
    slack = tolerance(d) if slack is None else slack
    observed = abs(math.fsum(d)) / n
    hits = sum(
        abs(math.fsum(s * x for s, x in zip(signs, d))) / n >= observed - slack
        for signs in product((1.0, -1.0), repeat=n)
    )
    return hits / 2**n


def paired_difference(reference: list[float], arm: list[float]) -> PairedDifference:
    """The seed-paired difference arm - reference; the two lists are paired by position (seed). A NaN or
    infinite value in either is a ValueError naming its positions (`check_finite`); round-off is judged
    on the scale of the values (`tolerance`)."""
    if len(reference) != len(arm) or not arm:
        raise ValueError(
            f"paired_difference needs two equally long, non-empty lists, got {len(reference)} and {len(arm)} values"
        )
    check_finite("paired_difference", reference=reference, arm=arm)
    d = [a - r for r, a in zip(reference, arm)]
    check_finite("paired_difference (arm - reference overflows)", d=d)
    n, diff = len(d), statistics.fmean(d)
    if n < 2:
        return PairedDifference(diff, math.nan, n, False, math.nan, math.nan, math.nan, math.nan, False, math.nan)
    tol = tolerance(reference, arm)
    sd, p_exact = statistics.stdev(d), sign_flip_p(d, slack=tol)
    if sd <= tol:  # every seed moved by the same amount: no spread to test against
        diff = 0.0 if abs(diff) <= tol else diff  # identical: the same value in both arms, up to round-off
        return PairedDifference(diff, 0.0, n, True, diff, diff, math.nan, p_exact, False, math.nan)
    se = sd / math.sqrt(n)
    half = float(student_t.ppf(0.5 + LEVEL / 2, n - 1)) * se
    p = float(2 * student_t.sf(abs(diff) / se, n - 1))
    low, high = diff - half, diff + half
    return PairedDifference(
        diff, sd, n, False, low, high, p, p_exact, bool(low > 0 or high < 0), minimal_detectable_difference(sd, n)
    )

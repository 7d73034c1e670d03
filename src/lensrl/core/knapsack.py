"""Knapsack RL's allocation of a step's samples over its prompts (docs/algorithm.md Sec. 10; Li et al.,
"Knapsack RL: Unlocking Exploration of LLMs via Optimizing Budget Allocation", arXiv 2509.25849; the authors'
code: liziniu/KnapsackRL, `verl/trainer/ppo/exploration_utils.py` and `verl/utils/dataset/rl_dataset.py`).

A step spends a fixed total of B samples (B = Q x G in the paper) on its Q prompts. Each prompt is an item of
a knapsack: n samples cost n and are worth Value(n, p) for a prompt that is answered correctly with
probability p, estimated from the prompt's past groups. Prompts never seen get a default; prompts whose
estimate is 0 or 1 get a small fixed amount; the others share the rest by an exact dynamic programme.

```text
Value(n, p)  = [1 - p^n - (1 - p)^n] * p (1 - p)^2
p_hat        = mean of the latest group if it had >= L samples, else of the latest L rewards (None below m)
base         = default (unseen), n_neg (p_hat = 0), n_pos (p_hat = 1), n_min (0 < p_hat < 1, "effective")
R            = B - sum(base)
C            = sum over effective i of floor(min(n_max, ln(1 - alpha) / ln(max(p_i, 1 - p_i))))
if C < R:      R - C goes evenly to the all-wrong prompts, and the programme gets C
programme    = extra k_i in 0..n_max - n_min per effective item, maximising the sum of the gains
               g_i(k) = Value(n_min + k, p_i) for k >= 1 and 0 for k = 0 (the authors' code)
```

Pure functions of plain Python numbers (the programme runs in torch); nothing here reads a config or a file.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

Visit = tuple[int, int]
"""One past group of a prompt: (samples, correct), the number of responses and how many were right."""


def knapsack_value(n: int, p: float) -> float:
    """The worth of n samples for a prompt answered correctly with probability p (Knapsack RL's item value).

    Value(n, p) = [1 - p^n - (1 - p)^n] * p (1 - p)^2.

    The first factor is the probability that a group of n independent responses is mixed, some right and some
    wrong: GRPO gives an all-right or all-wrong group zero advantages, so this is the probability that the
    group has a gradient at all. It is 0 for n = 1 and rises to 1 as n grows (for 0 < p < 1). The second factor
    is the paper's "information gain" InfoGain(p) ~ p (1 - p)^2, which a third-party summary of arXiv 2509.25849
    describes as an approximation of the expected rise in the prompt's success probability from one update;
    the paper's own derivation was not available (its text was not retrieved). The formula is the one the
    authors' code (liziniu/KnapsackRL, `exploration_utils.py`) uses in its programme. The value is 0 at p = 0
    and p = 1, where no group has a gradient. A table the authors' code prints shows p (1 - p)^3 as "value";
    that is display only, never used to allocate.

    n >= 1 samples (n = 0 has no meaning: the formula would give -p (1 - p)^2); 0 <= p <= 1.
    """
    _check_count("n", n, 1)
    _check_rate("p", p)
    q = 1.0 - p
    return (1.0 - p**n - q**n) * p * q**2


def estimate_success(visits: Sequence[Visit], window: int = 16, min_samples: int = 8) -> float | None:
    """A prompt's estimated success rate from its past groups, as the authors' code estimates it.

    `visits`: the prompt's past groups, oldest first, each (samples, correct) with samples >= 1 and
    0 <= correct <= samples. The estimate ("robust epoch estimation", the authors' `rl_dataset.py` with
    `epoch_estimation` and `robust_epoch_estimation` on, the settings of their script):

    * None (unseen: `allocate_samples` gives it the default) while fewer than `min_samples` rewards were ever
      seen (all visits together; the authors' `min_buffer_length`, 8 in their script);
    * the latest visit's mean when it had >= `window` samples (the authors' `reward_buffer_length`, 16);
    * otherwise the mean of the most recent `window` rewards, pooled backwards across visits: the latest visit
      whole, then the one before, and so on, until `window` rewards are taken (all of them when fewer exist).

    The authors keep every reward in order and take the last ones of the visit where the window ends. Here a
    visit is only its counts, so from that visit, m of its n samples, the window takes m * correct / n right
    answers (a fractional count), its share. That is the authors' count exactly when the window ends on a
    visit boundary (always so for groups of one size G with a window a multiple of G, as in their script: 8
    and 16) or when that visit was all right or all wrong; otherwise it is the authors' count averaged over
    the order of that visit's rewards, which carries no information (a group's responses are independent
    draws, and the authors' trainer shuffles the batch's responses before they are scored and recorded).
    The estimate is 0 (1) exactly when every reward it pools is wrong (right), whole visits or the share.

    The defaults are the authors' for G = 8; how they should scale with G is not known (the authors ran G = 8).
    """
    _check_count("window", window, 1)
    _check_count("min_samples", min_samples, 1)
    if isinstance(visits, str | bytes) or not isinstance(visits, Sequence):
        raise ValueError(f"visits must be a sequence of (samples, correct) pairs, oldest first, got {visits!r}")
    total = 0
    for visit in visits:
        if not isinstance(visit, Sequence) or isinstance(visit, str | bytes) or len(visit) != 2:
            raise ValueError(f"each visit must be a (samples, correct) pair, got {visit!r}")
        samples, correct = visit
        _check_count("a visit's samples", samples, 1)
        _check_count("a visit's correct", correct, 0)
        if correct > samples:
            raise ValueError(f"a visit has correct={correct} > samples={samples}")
        total += samples
    if total < min_samples:
        return None
    samples, correct = visits[-1]
    if samples >= window:
        return correct / samples
    taken, right = 0, 0.0
    for samples, correct in reversed(visits):
        m = min(samples, window - taken)
        right += correct if m == samples else correct * m / samples
        taken += m
        if taken == window:
            break
    return right / taken


def allocate_samples(
    estimates: Sequence[float | None],
    budget: int,
    default: int,
    min_samples: int = 2,
    max_samples: int = 128,
    *,
    negative_samples: int | None = None,
    positive_samples: int | None = None,
    alpha: float = 0.9,
    fallback: bool = True,
    exact_objective: bool = False,
    surplus_max: int | None = None,
    surplus_to_unseen: bool = True,
) -> list[int]:
    """The number of samples for each of a step's prompts, in their order, summing to `budget` exactly.

    `estimates`: one per prompt, None for a prompt without an estimate yet (`estimate_success`), else its
    estimated success rate in [0, 1]. The authors' procedure (`sampling_budget_by_knapsack` in
    liziniu/KnapsackRL's `exploration_utils.py`; their script: default = G = 8, budget 256 x 8,
    min_samples = negative_samples = positive_samples = 2, max_samples = 128, alpha = 0.9):

    1. Base amounts: `default` for an unseen prompt, `negative_samples` (default `min_samples`) for an estimate
       of 0, `positive_samples` (default `min_samples`) for 1, `min_samples` for 0 < p < 1 (the *effective*
       prompts). R = budget - their sum; a budget below the sum is an error.
    2. No effective prompt and R > 0: R is split evenly over the all-wrong prompts (p = 0), the first ones in
       order getting one more when it does not divide. Without any, the authors reset every prompt to
       `default`, which spends the budget only when it is Q x default (their own check of the total fails
       otherwise). Here R raises the lowest amounts first, as evenly as the bases allow (the first ones in
       order one more): `default` each when budget = Q x default and no base exceeds `default`, the
       authors' result; other budgets spread the same way, never below a prompt's base.
    3. Otherwise, with `fallback` (the authors' `allow_fallback`, on in their script): C = the sum over the
       effective prompts of floor(min(max_samples, ln(1 - alpha) / ln(max(p, 1 - p)))), the size at which a
       group is all right or all wrong with probability about 1 - alpha. If C < R, R - C is split evenly (as in
       step 2) over the all-wrong prompts, or over the all-right ones when there are none, and the programme
       gets C; else it gets R. C counts whole groups, yet it is what the programme shares *beyond* the
       effective prompts' `min_samples` (the authors' code; kept).
    4. The programme: each effective prompt i, in order, gets k_i in 0..max_samples - min_samples extra samples,
       with sum k_i = min(its budget, capacity) and sum g_i(k_i) largest, g_i(k) = Value(min_samples + k, p_i)
       (`knapsack_value`) for k >= 1. Exact dynamic programming over (prompt, samples used); ties keep the
       first option found (no extra sample, then the smallest k, prompt by prompt). What exceeds the
       capacity is split evenly over the effective prompts (the first ones in order one more), past
       `max_samples`.

    Where the authors' code has a quirk, the default reproduces it and an argument departs from it:

    * `exact_objective=False`: in the programme an effective prompt given no extra sample scores g_i(0) = 0, not
      the Value(min_samples, p_i) its min_samples samples are worth, which pushes the programme to give every
      effective prompt at least one extra sample. True scores Value(min_samples, p_i), so the programme
      maximises the paper's objective, the sum of Value(n_i, p_i) over the effective prompts, exactly.
    * `surplus_max=None`: the surplus of steps 2 and 3 is uncapped (the paper's abstract cites up to 93
      samples on a prompt). An int caps every prompt that takes a share at that many samples in all: the
      even split fills prompts up to the cap (the first ones in order one more), and what the caps hold back
      goes to the programme, or, with no effective prompt, evenly to the other prompts (to all prompts when
      every one took a share: the budget is always spent).
    * `surplus_to_unseen=True`: the authors' code marks a prompt as all-wrong by a success rate of 0 in an
      array that starts at 0 for every prompt and is filled only for those with an estimate, so unseen prompts
      also take shares of the surplus in steps 2 and 3 (over `default`). False gives the surplus to the
      prompts estimated at 0 only, so that unseen prompts get `default` except through step 2's even split.

    Two departures with no argument, where the authors' code fails: step 3 with no prompt to send the surplus
    to (every prompt effective) divides by zero there; here the programme gets all of R (so too when the only
    other prompts are unseen ones that `surplus_to_unseen=False` leaves out). And step 2's reset
    for a budget other than Q x default (above). Also, the authors keep success rates and gains in float32 and
    here they are float64, which can only change which of two allocations whose gains agree to float32
    round-off is chosen, or the floor in C where it is within round-off of an integer. Their "expectation"
    cost (1 / (p (1 - p)) - 1), unused by their script, is not provided.

    Every amount must be >= 1 (lensrl's groups need >= 2 samples, so a trainer passes >= 2), max_samples >=
    min_samples, 0 < alpha < 1, surplus_max >= negative_samples; a ValueError names what is wrong.
    """
    estimates = _check_estimates(estimates)
    _check_count("budget", budget, 0)
    _check_count("default", default, 1)
    _check_count("min_samples", min_samples, 1)
    _check_count("max_samples", max_samples, 1)
    negative_samples = min_samples if negative_samples is None else negative_samples
    positive_samples = min_samples if positive_samples is None else positive_samples
    _check_count("negative_samples", negative_samples, 1)
    _check_count("positive_samples", positive_samples, 1)
    if max_samples < min_samples:
        raise ValueError(f"max_samples={max_samples} is below min_samples={min_samples}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if surplus_max is not None:
        _check_count("surplus_max", surplus_max, 1)
        if surplus_max < negative_samples:
            raise ValueError(f"surplus_max={surplus_max} is below negative_samples={negative_samples}")

    q = len(estimates)
    counts, effective = [], []
    for i, p in enumerate(estimates):
        if p is None:
            counts.append(default)
        elif p == 0:
            counts.append(negative_samples)
        elif p == 1:
            counts.append(positive_samples)
        else:
            counts.append(min_samples)
            effective.append(i)
    rest = budget - sum(counts)
    if rest < 0:
        raise ValueError(
            f"budget={budget} is below the {sum(counts)} samples the {q} prompts' minimums take (default={default} "
            f"unseen, negative_samples={negative_samples} at 0, positive_samples={positive_samples} at 1, "
            f"min_samples={min_samples} otherwise)"
        )
    zero = [i for i, p in enumerate(estimates) if (p is None and surplus_to_unseen) or (p is not None and p == 0)]

    if not effective:
        if rest == 0:
            return counts
        if not zero:
            return _level(counts, rest)
        held = _share(counts, zero, rest, surplus_max)
        if held:
            others = [i for i in range(q) if i not in set(zero)] or zero
            _share(counts, others, held, None)
        return counts

    programme = rest
    if fallback and rest > 0:
        log_miss = math.log(1 - alpha)
        cost = 0
        for i in effective:
            p = estimates[i]
            log_same = math.log(max(p, 1 - p))
            cost += max_samples if log_same == 0 else int(min(max_samples, log_miss / log_same))
        if cost < rest:
            takers = zero or [i for i, p in enumerate(estimates) if p is not None and p == 1]
            held = _share(counts, takers, rest - cost, surplus_max) if takers else rest - cost
            programme = cost + held

    rates = [estimates[i] for i in effective]
    extras = knapsack_extras(rates, min_samples, max_samples - min_samples, programme, exact_objective)
    for i, k in zip(effective, extras):
        counts[i] += k
    _even(counts, effective, programme - sum(extras))
    assert sum(counts) == budget
    return counts


def knapsack_extras(
    rates: Sequence[float], base: int, most: int, budget: int, exact_objective: bool = False
) -> list[int]:
    """The programme of `allocate_samples` step 4: extra samples k_i in 0..`most` for items of success rates
    0 < p_i < 1 that already hold `base` samples, with sum k_i = min(budget, len(rates) x most) and the
    largest sum of gains g_i(k_i), g_i(k) = Value(base + k, p_i) for k >= 1 and, for k = 0, 0 (the authors'
    code) or Value(base, p_i) (`exact_objective`).

    Exact dynamic programming in the authors' order: best[i][w] = max over k of best[i-1][w-k] + g_i(k), the
    first maximum kept (k = 0 first, then k ascending), then backtracking from the total. Vectorised over w in
    torch (float64): O(items x total x most) additions, a few milliseconds for 32 items, a total of 512 and
    most = 64.
    """
    for j, p in enumerate(rates):
        _check_rate(f"rates[{j}]", p)
    _check_count("base", base, 1)
    _check_count("most", most, 0)
    _check_count("budget", budget, 0)
    items = len(rates)
    total = min(budget, items * most)
    if items == 0 or total <= 0:
        return [0] * items
    gains = torch.tensor(
        [[knapsack_value(base + k, p) if k or exact_objective else 0.0 for k in range(most + 1)] for p in rates],
        dtype=torch.float64,
    )  # (items, most + 1)
    best = torch.full((total + 1,), -math.inf, dtype=torch.float64)
    best[0] = 0.0
    unreachable = torch.full((most,), -math.inf, dtype=torch.float64)
    choice = torch.empty(items, total + 1, dtype=torch.long)
    for i in range(items):
        # before[w, k] = best[w - k] (-inf for w < k): windows of the padded row, read backwards
        before = torch.cat([unreachable, best]).unfold(0, most + 1, 1).flip(1)  # (total + 1, most + 1)
        candidates = before + gains[i]
        choice[i] = candidates.argmax(dim=1)  # the first maximum: k = 0 first, then k ascending
        best = candidates.gather(1, choice[i].unsqueeze(1)).squeeze(1)
    extras = [0] * items
    w = total
    for i in range(items - 1, -1, -1):
        extras[i] = int(choice[i, w])
        w -= extras[i]
    return extras


def _share(counts: list[int], takers: Sequence[int], amount: int, cap: int | None) -> int:
    """Split `amount` evenly over `takers` (in place), the first ones in order one more when it does not divide;
    with a cap, no taker above `cap` in all (filling them level by level); returns what the caps held back."""
    if cap is None:
        _even(counts, takers, amount)
        return 0
    room = [max(0, cap - counts[i]) for i in takers]
    if sum(room) <= amount:
        for i, r in zip(takers, room):
            counts[i] += r
        return amount - sum(room)
    level = 0  # the largest level with sum(min(room, level)) <= amount
    while sum(min(r, level + 1) for r in room) <= amount:
        level += 1
    left = amount - sum(min(r, level) for r in room)
    for i, r in zip(takers, room):
        counts[i] += min(r, level)
        if r > level and left:
            counts[i] += 1
            left -= 1
    return 0


def _level(counts: list[int], amount: int) -> list[int]:
    """Raise the lowest counts first (in place) by `amount` in all: every count below some level L is raised to
    L, the first ones in order at L one more where `amount` does not divide, so the counts are as even as the
    bases allow and none falls below its base."""
    level = min(counts)
    while sum(max(0, level + 1 - c) for c in counts) <= amount:
        level += 1
    left = amount - sum(max(0, level - c) for c in counts)
    for i, c in enumerate(counts):
        if c <= level:
            counts[i] = level + (left > 0)
            left -= left > 0
    return counts


def _even(counts: list[int], takers: Sequence[int], amount: int) -> list[int]:
    takers = list(takers)
    if not takers or amount <= 0:
        return counts
    each, more = divmod(amount, len(takers))
    for j, i in enumerate(takers):
        counts[i] += each + (j < more)
    return counts


def _check_count(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")


def _check_rate(name: str, p: object) -> None:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):  # NaN fails the comparison
        raise ValueError(f"{name} must be a success rate in [0, 1], got {p!r}")


def _check_estimates(estimates: Sequence[float | None]) -> list[float | None]:
    if isinstance(estimates, str | bytes) or not isinstance(estimates, Sequence):
        raise ValueError(f"estimates must be a sequence with one success rate (or None) per prompt, got {estimates!r}")
    if not estimates:
        raise ValueError("estimates must name at least one prompt")
    for j, p in enumerate(estimates):
        if p is not None:
            _check_rate(f"estimates[{j}]", p)
    return [None if p is None else float(p) for p in estimates]

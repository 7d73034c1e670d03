"""Knapsack RL's allocation (`lensrl.core.knapsack`, docs/algorithm.md Sec. 10): the value, the success-rate
estimate and the allocation against hand-worked cases; the programme against brute force and against a plain
loop in the authors' order; the total against the budget on many random instances.

Shorthand in the comments: V(n, p) = [1 - p^n - (1-p)^n] p (1-p)^2, q = 1 - p. Two closed forms used below:
1 - p^3 - q^3 = 3pq (from (p + q)^3 = 1), so V(2, p) = 2 p^2 q^3 and V(3, p) = 3 p^2 q^3; at p = 1/2,
V(n, 1/2) = (1 - 2^(1-n)) / 8. The fallback's size at alpha = 0.9: ln 0.1 / ln 0.5 = 3.32 -> 3 and
ln 0.1 / ln 0.75 = 8.004 -> 8.
"""

import itertools
import math
import random

import pytest

import lensrl.core
from lensrl.core.knapsack import allocate_samples, estimate_success, knapsack_extras, knapsack_value

# ---------------------------------------------------------------- the value


@pytest.mark.parametrize(
    ("n", "p", "expected"),
    [
        (1, 0.3, 0.0),  # one sample is never a mixed group: 1 - p - q = 0
        (2, 0.5, 0.0625),  # (1 - 1/4 - 1/4) * 1/2 * 1/4 = 1/16
        (4, 0.5, 7 / 64),  # (1 - 2/16) * 1/8 = 7/64
        (3, 0.25, 81 / 1024),  # (1 - 1/64 - 27/64) = 9/16, p q^2 = 1/4 * 9/16 = 9/64, product 81/1024
        (2, 0.75, 18 / 1024),  # V(2, p) = 2 p^2 q^3 = 2 * 9/16 * 1/64
        (3, 0.75, 27 / 1024),  # V(3, p) = 3 p^2 q^3
        (8, 0.0, 0.0),  # all wrong: no group has a gradient
        (8, 1.0, 0.0),  # all right: neither
    ],
)
def test_value_by_hand(n, p, expected):
    assert knapsack_value(n, p) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_value_rises_with_samples_towards_p_q_squared():
    # the gradient probability 1 - p^n - q^n rises to 1, so V rises to p q^2 = 0.3 * 0.49 = 0.147
    values = [knapsack_value(n, 0.3) for n in range(1, 60)]
    assert values == sorted(values)
    assert values[-1] == pytest.approx(0.3 * 0.7**2, rel=1e-8)


@pytest.mark.parametrize(("n", "p"), [(0, 0.5), (-1, 0.5), (2.0, 0.5), (True, 0.5), (2, 1.5), (2, -0.1), (2, math.nan)])
def test_value_rejects_bad_inputs(n, p):
    with pytest.raises(ValueError):
        knapsack_value(n, p)


# ---------------------------------------------------------------- the estimate


def test_estimate_is_none_below_the_minimum_count():
    assert estimate_success([], window=16, min_samples=8) is None
    assert estimate_success([(4, 2)], window=16, min_samples=8) is None
    assert estimate_success([(4, 0), (3, 0)], window=16, min_samples=8) is None  # 7 rewards
    # 8 rewards over two visits: valid; 4 + 4 < 16, so all of them: (0 + 0) / 8
    assert estimate_success([(4, 0), (4, 0)], window=16, min_samples=8) == 0.0


def test_estimate_takes_the_latest_visit_alone_when_it_fills_the_window():
    # the latest visit had 16 >= 16 samples: 4/16, whatever came before
    assert estimate_success([(8, 8), (16, 4)], window=16, min_samples=8) == 0.25
    assert estimate_success([(8, 8), (20, 5)], window=16, min_samples=8) == 0.25  # all 20, not the last 16


def test_estimate_pools_the_most_recent_window_backwards():
    # window 16: the latest (8, 4) and the one before (8, 0) fill it; the oldest (8, 8) is not read: 4/16
    assert estimate_success([(8, 8), (8, 0), (8, 4)], window=16, min_samples=8) == 0.25
    # fewer than 16 rewards in all: every one, (2 + 1) / 8
    assert estimate_success([(4, 2), (4, 1)], window=16, min_samples=8) == 3 / 8


def test_estimate_takes_a_share_of_the_visit_where_the_window_ends():
    # latest (8, 2) whole, then 8 of the 10 samples of (10, 5): 8 * 5/10 = 4 right -> (2 + 4) / 16
    assert estimate_success([(10, 5), (8, 2)], window=16, min_samples=8) == 6 / 16
    # a share of an all-wrong or all-right visit is exact, so 0 and 1 stay exactly 0 and 1
    assert estimate_success([(93, 0), (2, 0)], window=16, min_samples=8) == 0.0
    assert estimate_success([(93, 93), (2, 2)], window=16, min_samples=8) == 1.0
    # 14 of (93, 1): 14/93 of an answer -> (0 + 14/93) / 16
    assert estimate_success([(93, 1), (2, 0)], window=16, min_samples=8) == pytest.approx(14 / 93 / 16)


def _authors_estimate(reward_lists, window, min_samples):
    """The estimate from the rewards in order (the spec's description of the authors' `rl_dataset.py`)."""
    if sum(len(r) for r in reward_lists) < min_samples:
        return None
    if len(reward_lists[-1]) >= window:
        return sum(reward_lists[-1]) / len(reward_lists[-1])
    recent = [r for rewards in reversed(reward_lists) for r in reversed(rewards)][:window]
    return sum(recent) / len(recent)


def test_estimate_equals_the_authors_when_the_window_ends_on_a_visit_and_their_average_otherwise():
    rng = random.Random(0)
    for _ in range(300):
        sizes = [rng.randint(1, 12) for _ in range(rng.randint(1, 5))]
        rewards = [[rng.randint(0, 1) for _ in range(n)] for n in sizes]
        visits = [(len(r), sum(r)) for r in rewards]
        window, least = rng.randint(1, 20), rng.randint(1, 10)
        ours = estimate_success(visits, window=window, min_samples=least)
        # the visit where the window ends, and how many of its samples it takes
        taken, cut = 0, None
        for j in range(len(sizes) - 1, -1, -1):
            if sum(sizes[j:]) >= window:
                taken = window - sum(sizes[j + 1 :])
                cut = j if taken < sizes[j] else None
                break
        if ours is None or sizes[-1] >= window or cut is None:
            assert ours == pytest.approx(_authors_estimate(rewards, window, least), abs=1e-12)
            continue
        # average the authors' estimate over every order of that visit's rewards (where its right ones stand)
        n, c = sizes[cut], sum(rewards[cut])
        orders = [[int(j in right) for j in range(n)] for right in itertools.combinations(range(n), c)]
        mean = sum(_authors_estimate([*rewards[:cut], o, *rewards[cut + 1 :]], window, least) for o in orders)
        assert ours == pytest.approx(mean / len(orders), abs=1e-12)


@pytest.mark.parametrize(
    ("visits", "window", "least"),
    [
        ([(0, 0)], 16, 8),  # a visit without samples
        ([(4, 5)], 16, 8),  # more right than samples
        ([(4, -1)], 16, 8),
        ([(4,)], 16, 8),
        ([(4.0, 2)], 16, 8),
        ("ab", 16, 8),
        ([(4, 2)], 0, 8),
        ([(4, 2)], 16, 0),  # the authors' code would read an unseen prompt as all-wrong at 0
    ],
)
def test_estimate_rejects_bad_inputs(visits, window, least):
    with pytest.raises(ValueError):
        estimate_success(visits, window=window, min_samples=least)


# ---------------------------------------------------------------- the allocation, by hand


def test_three_prompts_and_a_budget_of_twelve():
    # unseen, all-wrong, p = 1/2; default 4, min 2, max 8: bases 4 + 2 + 2 = 8, R = 12 - 8 = 4.
    # fallback: C = floor(min(8, 3.32)) = 3 < 4, so the surplus 4 - 3 = 1 is split over the "success rate 0"
    # prompts, which in the authors' code include the unseen one (its rate is never filled in): the first in
    # order takes it, the unseen prompt 0. The programme gets 3 for its one item (capacity 6): k = 3.
    assert allocate_samples([None, 0.0, 0.5], 12, default=4, min_samples=2, max_samples=8) == [5, 2, 5]
    # without the unseen prompt among them, the all-wrong prompt takes it
    assert allocate_samples([None, 0.0, 0.5], 12, 4, 2, 8, surplus_to_unseen=False) == [4, 3, 5]


def test_the_programme_picks_the_best_split_of_two_items():
    # p = 1/2 and 1/4, all-right third; min 2, max 6, no fallback: R = 12 - 6 = 6 extra over extras in 0..4,
    # so (2, 4), (3, 3) or (4, 2). Gains Value(2 + k, p):
    #   p = 1/2: V(4) = 7/64 = 0.109375, V(5) = 15/128 = 0.1171875, V(6) = 31/256 = 0.12109375
    #   p = 1/4: p q^2 = 9/64; 1 - p^n - q^n = 174/256, 780/1024, 3366/4096 at n = 4, 5, 6
    #            V(4) = 0.0955811, V(5) = 0.1071167, V(6) = 0.1155624
    #   (2, 4): 0.109375 + 0.1155624 = 0.2249374  <- best
    #   (3, 3): 0.1171875 + 0.1071167 = 0.2243042
    #   (4, 2): 0.12109375 + 0.0955811 = 0.2166748
    counts = allocate_samples([0.5, 0.25, 1.0], 12, 4, 2, 6, fallback=False)
    assert counts == [4, 6, 2]
    # with the fallback: C = 3 + floor(ln 0.1 / ln 0.75 = 8.004 -> min(6, 8) = 6) = 9 >= 6: the same programme
    assert allocate_samples([0.5, 0.25, 1.0], 12, 4, 2, 6) == [4, 6, 2]


def test_the_zero_gain_for_no_extra_sample_spreads_the_extras():
    # p = 1/2 and 3/4, min 2, max 4 (extras 0..2), R = 6 - 4 = 2 (C = 3 + 4 >= 2: no fallback).
    # V(n, 1/2) = (1 - 2^(1-n)) / 8: V(2) = 1/16, V(3) = 3/32, V(4) = 7/64.
    # V(n, 3/4) with p^2 q^3 = 9/1024: V(2) = 18/1024, V(3) = 27/1024, V(4) = 0.6796875 * 3/64 = 0.0318604.
    # the authors' gains (k = 0 scores 0):
    #   (2, 0): 7/64 + 0 = 0.109375;  (1, 1): 3/32 + 27/1024 = 0.1201172  <- best;  (0, 2): 0 + 0.0318604
    # the objective sum V(n_i, p_i) (k = 0 scores V(2, p)):
    #   (2, 0): 7/64 + 18/1024 = 0.1269531  <- best;  (1, 1): 0.1201172;  (0, 2): 1/16 + 0.0318604 = 0.0943604
    assert allocate_samples([0.5, 0.75], 6, 4, 2, 4) == [3, 3]
    assert allocate_samples([0.5, 0.75], 6, 4, 2, 4, exact_objective=True) == [4, 2]


def test_all_wrong_prompts_take_the_surplus():
    # p = 1/2, two all-wrong, one all-right; default 8, min 2, max 16: bases 8, R = 32 - 8 = 24; C = 3 < 24:
    # the surplus 21 goes to the all-wrong prompts 1 and 2, 11 and 10 (the first one more), uncapped;
    # the programme gets 3, all to its one item: 2 + 3
    assert allocate_samples([0.5, 0.0, 0.0, 1.0], 32, 8, 2, 16) == [5, 13, 12, 2]
    # capped at 8 each: they take 6 + 6 of the 21, and the 9 held back join the programme: 3 + 9 = 12 extra
    assert allocate_samples([0.5, 0.0, 0.0, 1.0], 32, 8, 2, 16, surplus_max=8) == [14, 8, 8, 2]
    # capped at 10: 8 + 8 taken, 5 held back, 3 + 5 = 8 extra
    assert allocate_samples([0.5, 0.0, 0.0, 1.0], 32, 8, 2, 16, surplus_max=10) == [10, 10, 10, 2]
    # without the fallback the programme gets all 24 and the all-wrong prompts keep their 2
    assert allocate_samples([0.5, 0.0, 0.0, 1.0], 32, 8, 2, 16, fallback=False) == [2 + 14 + 10, 2, 2, 2]


def test_a_cap_fills_prompts_of_different_bases_level_by_level():
    # p = 1/2, unseen (base 8, takes surplus as the authors' code does), all-wrong (base 2); budget 24:
    # R = 24 - 12 = 12, C = 3, surplus 9. Uncapped: 5 and 4 -> [2 + 3, 13, 6].
    assert allocate_samples([0.5, None, 0.0], 24, 8, 2, 16) == [5, 13, 6]
    # capped at 10: room 2 and 8; the largest level t with min(2, t) + min(8, t) <= 9 is t = 7 (2 + 7 = 9)
    assert allocate_samples([0.5, None, 0.0], 24, 8, 2, 16, surplus_max=10) == [5, 10, 9]


def test_all_right_prompts_take_the_surplus_when_none_is_all_wrong():
    # p = 1/2 and two all-right; default 8, min 2, max 16: R = 20 - 6 = 14, C = 3, surplus 11 -> 6 and 5
    assert allocate_samples([0.5, 1.0, 1.0], 20, 8, 2, 16) == [5, 8, 7]


def test_every_prompt_effective_sends_the_surplus_to_the_programme():
    # the authors' code divides by zero here (no prompt to take R - C). Two at p = 1/2, budget 40, max 16:
    # R = 36, C = 6 < 36, no taker: the programme gets 36, its capacity is 2 * 14 = 28 (both at 16),
    # and the 8 beyond it are split evenly, past max_samples: 16 + 4 each
    assert allocate_samples([0.5, 0.5], 40, 8, 2, 16) == [20, 20]


def test_an_estimate_within_round_off_of_0_or_1_costs_max_samples():
    # max(p, 1 - p) rounds to 1.0, so its ln is 0: the fallback's size is max_samples (the authors' numpy
    # gives inf, then min(max_n, inf)). R = 20 - 2 - 2 = 16, C = 16: not below R, no surplus; the programme
    # takes 16, its capacity is 14, and the 2 beyond it go to the same prompt: 2 + 14 + 2
    assert allocate_samples([1e-18, 0.0], 20, 8, 2, 16) == [18, 2]
    # one more: C = 16 < R = 17, the all-wrong prompt takes the surplus 1
    assert allocate_samples([1e-18, 0.0], 21, 8, 2, 16) == [18, 3]


def test_leftover_beyond_the_programmes_capacity_goes_first_ones_first():
    # three at p = 1/2, max 3 (extras 0..1), no fallback: R = 12 - 6 = 6, capacity 3: one extra each,
    # then 3 left over: one more each
    assert allocate_samples([0.5, 0.5, 0.5], 12, 4, 2, 3, fallback=False) == [4, 4, 4]
    # 13: 4 left over, the first one takes the odd one
    assert allocate_samples([0.5, 0.5, 0.5], 13, 4, 2, 3, fallback=False) == [5, 4, 4]


# ---------------------------------------------------------------- edge cases


def test_unseen_prompts_get_the_default():
    assert allocate_samples([None] * 5, 5 * 8, 8) == [8] * 5
    # beside effective prompts, with no surplus: default, and the rest by the programme
    counts = allocate_samples([None, 0.3, None, 0.6], 8 + 8 + 10, 8, 2, 8)
    assert counts[0] == counts[2] == 8 and sum(counts) == 26
    # with a surplus, only when unseen prompts do not share it
    counts = allocate_samples([None, 0.5, 0.0, None], 64, 8, 2, 16, surplus_to_unseen=False)
    assert counts[0] == counts[3] == 8 and counts[2] > 2 and sum(counts) == 64


def test_no_effective_prompt():
    # all-wrong, all-right, all-wrong; default 4, min 2: R = 12 - 6 = 6, split 3 + 3 over prompts 0 and 2
    assert allocate_samples([0.0, 1.0, 0.0], 12, 4) == [5, 2, 5]
    # R = 7: the first one takes the odd one
    assert allocate_samples([0.0, 1.0, 0.0], 13, 4) == [6, 2, 5]
    # R = 0: the bases
    assert allocate_samples([0.0, 1.0, 0.0], 6, 4) == [2, 2, 2]
    # capped at 4: 2 + 2 taken, 3 held back go to the all-right prompt
    assert allocate_samples([0.0, 1.0, 0.0], 13, 4, surplus_max=4) == [4, 5, 4]
    # every prompt all-wrong and capped: the budget is still spent, past the cap
    assert allocate_samples([0.0, 0.0], 13, 4, surplus_max=4) == [7, 6]


def test_every_prompt_all_right():
    # the authors reset every prompt to the default: here R = 12 - 6 = 6 raises the lowest first, to 4 each
    assert allocate_samples([1.0, 1.0, 1.0], 12, 4) == [4, 4, 4]
    # a budget other than Q x default (the authors' total check fails): R = 7, level 4 takes 6, the first one more
    assert allocate_samples([1.0, 1.0, 1.0], 13, 4) == [5, 4, 4]
    # the bases alone when they spend it exactly
    assert allocate_samples([1.0, 1.0, 1.0], 6, 4) == [2, 2, 2]
    # an unseen prompt that takes no surplus beside them: Q x default = 24 gives the default to all, as the
    # authors' reset does (R = 24 - 12 = 12 raises 2 and 2 to 8); 20 raises them to 6 and keeps the default
    assert allocate_samples([None, 1.0, 1.0], 24, 8, surplus_to_unseen=False) == [8, 8, 8]
    assert allocate_samples([None, 1.0, 1.0], 20, 8, surplus_to_unseen=False) == [8, 6, 6]


def test_all_unseen_above_the_default_budget():
    # R = 14 - 12 = 2 goes to the unseen prompts as "success rate 0" ones (the authors' code), or, without
    # that, evenly over all as when nothing is all-wrong: the same here
    assert allocate_samples([None] * 3, 14, 4) == [5, 5, 4]
    assert allocate_samples([None] * 3, 14, 4, surplus_to_unseen=False) == [5, 5, 4]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([0.5, 0.0], 3, 4), {}, "below the 4 samples"),
        (([None, 0.5], 9, 8), {}, "below the 10 samples"),
        (([], 0, 4), {}, "at least one prompt"),
        (([1.5], 8, 4), {}, r"estimates\[0\]"),
        (([-0.1], 8, 4), {}, r"estimates\[0\]"),
        (([math.nan], 8, 4), {}, r"estimates\[0\]"),
        (([True], 8, 4), {}, r"estimates\[0\]"),
        (([0.5], 8.0, 4), {}, "budget"),
        (([0.5], -1, 4), {}, "budget"),
        (([0.5], 8, 0), {}, "default"),
        (([0.5], 8, 4, 0), {}, "min_samples"),
        (([0.5], 8, 4, 4, 3), {}, "max_samples=3 is below"),
        (([0.5], 8, 4), {"alpha": 1.0}, "alpha"),
        (([0.5], 8, 4), {"alpha": 0}, "alpha"),
        (([0.5], 8, 4), {"negative_samples": 0}, "negative_samples"),
        (([0.5], 8, 4), {"surplus_max": 1}, "surplus_max=1 is below"),
        (("ab", 8, 4), {}, "sequence"),
    ],
)
def test_allocation_rejects_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        allocate_samples(*args, **kwargs)


# ---------------------------------------------------------------- the programme


def _gains(rates, base, most, exact):
    return [[knapsack_value(base + k, p) if k or exact else 0.0 for k in range(most + 1)] for p in rates]


def _loop_extras(rates, base, most, budget, exact):
    """The programme as a plain loop in the authors' order: skip first, then k ascending, a strict > keeping
    the first best; backtracking from the largest reachable total."""
    gains, items = _gains(rates, base, most, exact), len(rates)
    total = min(budget, items * most)
    best = [0.0] + [-math.inf] * total
    choices = []
    for i in range(items):
        row, choice = [-math.inf] * (total + 1), [0] * (total + 1)
        for w in range(total + 1):
            for k in range(min(most, w) + 1):
                if best[w - k] == -math.inf:
                    continue
                value = best[w - k] + gains[i][k]
                if value > row[w]:
                    row[w], choice[w] = value, k
        best = row
        choices.append(choice)
    extras, w = [0] * items, total
    for i in range(items - 1, -1, -1):
        extras[i] = choices[i][w]
        w -= extras[i]
    return extras


@pytest.mark.parametrize("exact", [False, True])
def test_the_programme_maximises_the_summed_gain_against_brute_force(exact):
    rng = random.Random(1)
    for _ in range(150):
        items, most = rng.randint(1, 4), rng.randint(0, 4)
        base = rng.randint(1, 3)
        budget = rng.randint(0, items * most + 3)
        rates = [rng.choice([0.5, 0.25, 0.75, rng.uniform(0.01, 0.99)]) for _ in range(items)]
        extras = knapsack_extras(rates, base, most, budget, exact)
        total = min(budget, items * most)
        assert sum(extras) == total and all(0 <= k <= most for k in extras)
        gains = _gains(rates, base, most, exact)
        best = max(
            sum(gains[i][k] for i, k in enumerate(ks))
            for ks in itertools.product(range(most + 1), repeat=items)
            if sum(ks) == total
        )
        assert sum(gains[i][k] for i, k in enumerate(extras)) == pytest.approx(best, rel=1e-12, abs=1e-15)
        # and the very assignment a loop in the authors' order picks, ties included
        assert extras == _loop_extras(rates, base, most, budget, exact)


def test_the_programme_breaks_ties_towards_fewer_extras_first():
    # two equal items, budget 1: (1, 0) and (0, 1) tie. Item 1 is added second: at w = 1 its options are
    # k = 0 (item 0's best at w = 1, V(3)) and k = 1 (item 0's best at w = 0 plus V(3)), equal, and the first,
    # k = 0, is kept; backtracking from w = 1 then gives item 0 the extra sample
    assert knapsack_extras([0.5, 0.5], 2, 2, 1) == [1, 0]
    assert _loop_extras([0.5, 0.5], 2, 2, 1, False) == [1, 0]


def test_the_programme_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"rates\[1\]"):
        knapsack_extras([0.5, 1.5], 2, 4, 4)
    with pytest.raises(ValueError, match="base"):
        knapsack_extras([0.5], 0, 4, 4)
    with pytest.raises(ValueError, match="most"):
        knapsack_extras([0.5], 2, -1, 4)
    with pytest.raises(ValueError, match="budget"):
        knapsack_extras([0.5], 2, 4, -1)


# ---------------------------------------------------------------- random instances


def test_the_total_is_the_budget_on_random_instances():
    rng = random.Random(3)
    for _ in range(400):
        q = rng.randint(1, 12)
        estimates = [rng.choice([None, 0.0, 1.0, rng.random(), rng.choice([0.5, 0.25])]) for _ in range(q)]
        default, least = rng.randint(1, 8), rng.randint(1, 4)
        most = rng.randint(least, 20)
        negative, positive = rng.randint(1, 4), rng.randint(1, 4)
        bases = sum(default if p is None else negative if p == 0 else positive if p == 1 else least for p in estimates)
        budget = bases + rng.randint(0, 10 * q)
        cap = rng.choice([None, None, negative + rng.randint(0, 10)])
        options = {
            "negative_samples": negative,
            "positive_samples": positive,
            "fallback": rng.random() < 0.8,
            "exact_objective": rng.random() < 0.5,
            "surplus_max": cap,
            "surplus_to_unseen": rng.random() < 0.5,
        }
        counts = allocate_samples(estimates, budget, default, least, most, **options)
        assert len(counts) == q and sum(counts) == budget
        # nobody falls below their base amount
        for p, n in zip(estimates, counts):
            assert n >= (default if p is None else negative if p == 0 else positive if p == 1 else least)
        # a cap holds for the all-wrong prompts whenever there are effective prompts to take the rest
        if cap is not None and any(p is not None and 0 < p < 1 for p in estimates):
            assert all(n <= max(cap, negative) for p, n in zip(estimates, counts) if p == 0)


def test_exported_from_lensrl_core():
    for name in ("allocate_samples", "estimate_success", "knapsack_extras", "knapsack_value"):
        assert getattr(lensrl.core, name) is getattr(lensrl.core.knapsack, name)

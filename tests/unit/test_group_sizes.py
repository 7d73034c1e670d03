"""Groups of different sizes in the core (`GroupSizes`): hand-worked values, one call against a loop over
the groups, and equal sizes given as a list against the int path, bit for bit.

Convention in the cases: lengths = 1, so seq_logprobs = log(pibar).
"""

import math

import pytest
import torch

from lensrl.core.advantages import (
    GROUP_KINDS,
    advantage_mass,
    group_kinds,
    group_layout,
    group_metrics,
    group_outcomes,
    group_rows,
    grpo_advantages,
    kept_groups,
    lens_advantages,
    lens_rewards,
    negative_group_signal_share,
    ngrpo_advantages,
    uniform_negative_advantages,
)

EPS = 1e-6


def _t(xs):
    return torch.tensor(xs, dtype=torch.float64)


# ---------------------------------------------------------------- by hand


def test_grpo_on_a_group_of_two_and_a_group_of_four():
    # r = [1, 0 | 1, 0, 0, 0], sizes (2, 4)
    # group 1: mean 0.5, unbiased std sqrt((0.5^2 + 0.5^2) / 1) = sqrt(0.5)
    # group 2: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    r = _t([1, 0, 1, 0, 0, 0])
    centred = _t([0.5, -0.5, 0.75, -0.25, -0.25, -0.25])
    scale = _t([math.sqrt(0.5)] * 2 + [0.5] * 4)
    torch.testing.assert_close(grpo_advantages(r, [2, 4]), centred / (scale + EPS))
    assert grpo_advantages(r, [2, 4])[0].item() == pytest.approx(0.5 / math.sqrt(0.5), rel=1e-5)  # 1/sqrt(2)
    torch.testing.assert_close(grpo_advantages(r, [2, 4], scale="none"), centred)
    # "batch": each group centred on its own mean, divided by the std of all 6 rows:
    # mean 1/3, unbiased var (2 (2/3)^2 + 4 (1/3)^2) / 5 = (12/9) / 5 = 4/15
    torch.testing.assert_close(grpo_advantages(r, (2, 4), scale="batch"), centred / (math.sqrt(4 / 15) + EPS))


def test_grpo_groups_of_sizes_in_any_order():
    # sizes (4, 2, 3): [1,0,0,0 | 0,1 | 1,1,0]; the 3-group: mean 2/3, std sqrt((2 (1/3)^2 + (2/3)^2) / 2) = sqrt(1/3)
    r = _t([1, 0, 0, 0, 0, 1, 1, 1, 0])
    expected = torch.cat(
        [
            _t([0.75, -0.25, -0.25, -0.25]) / (0.5 + EPS),
            _t([-0.5, 0.5]) / (math.sqrt(0.5) + EPS),
            _t([1 / 3, 1 / 3, -2 / 3]) / (math.sqrt(1 / 3) + EPS),
        ]
    )
    torch.testing.assert_close(grpo_advantages(r, torch.tensor([4, 2, 3])), expected)


# A negative group of 2 followed by a mixed group of 3 (lengths 1):
#   negative, pibar (0.8, 0.2), n = 2:  D = 2 max pibar = 1.6 (no D_imp without a right answer)
#     r~ = -(1/2) 0.8/(1.6 - 0.8) = -1/2,  -(1/2) 0.2/(1.6 - 0.2) = -1/14
#     mean r~ = (-7/14 - 1/14) / 2 = -2/7, so r~ - mean = -3/14, +3/14
#     A = alpha (r~ - mean) = 0.25 (-3/14, 3/14) = (-3/56, 3/56)
#     normalize_negative: std r~ (unbiased, n - 1 = 1) = sqrt(2 (3/14)^2) = (3/14) sqrt(2),
#     A = 0.25 (-3/14, 3/14) / ((3/14) sqrt(2) + eps) ~ 0.25 (-1/sqrt(2), 1/sqrt(2))
#   mixed, correct (1, 0, 0), pibar (0.5, 0.6, 0.3), n = 3:
#     D_imp = 1 / ((1/3) (1/0.5)) = 1.5 above the floor 2 x 0.6 = 1.2, so D = 1.5
#     r~ = 1,  -(1/3) 0.6/0.9 = -2/9,  -(1/3) 0.3/1.2 = -1/12
#     mean r~ = (36 - 8 - 3)/36 / 3 = 25/108; r~ - mean = 83/108, -49/108, -34/108
#     unbiased std = sqrt((83^2 + 49^2 + 34^2) / 108^2 / 2) = sqrt(10446 / 23328)
#     A = (r~ - mean) / (std + eps)
# With one G for the batch (e.g. 1/5) every wrong answer's r~ would differ: 1/G is each group's own 1/n_q.
CORRECT = [0, 0, 1, 0, 0]
PIBAR = [0.8, 0.2, 0.5, 0.6, 0.3]
SIZES = (2, 3)
MIXED_STD = math.sqrt(10446 / 23328)


def _lens_inputs():
    return _t(CORRECT), _t([math.log(p) for p in PIBAR]), _t([1] * 5)


def test_lens_rewards_of_a_negative_group_of_two_and_a_mixed_group_of_three():
    rt = lens_rewards(*_lens_inputs(), SIZES)
    torch.testing.assert_close(rt, _t([-1 / 2, -1 / 14, 1, -2 / 9, -1 / 12]))


def test_lens_advantages_of_a_negative_group_of_two_and_a_mixed_group_of_three():
    mixed = _t([83 / 108, -49 / 108, -34 / 108]) / (MIXED_STD + EPS)
    adv = lens_advantages(*_lens_inputs(), SIZES)
    torch.testing.assert_close(adv, torch.cat([_t([-3 / 56, 3 / 56]), mixed]))
    normalised = lens_advantages(*_lens_inputs(), SIZES, normalize_negative=True)
    negative = 0.25 * _t([-3 / 14, 3 / 14]) / (3 / 14 * math.sqrt(2) + EPS)
    torch.testing.assert_close(normalised, torch.cat([negative, mixed]))
    assert normalised[1].item() == pytest.approx(0.25 / math.sqrt(2), rel=1e-5)
    # scope="mixed": the negative group keeps 0; scope="negative": the mixed group is GRPO on (1, 0, 0)
    torch.testing.assert_close(lens_advantages(*_lens_inputs(), SIZES, scope="mixed"), torch.cat([_t([0, 0]), mixed]))
    grpo_mixed = _t([2 / 3, -1 / 3, -1 / 3]) / (math.sqrt(1 / 3) + EPS)  # mean 1/3, std sqrt((4/9 + 2/9) / 2)
    torch.testing.assert_close(
        lens_advantages(*_lens_inputs(), SIZES, scope="negative"), torch.cat([_t([-3 / 56, 3 / 56]), grpo_mixed])
    )


def test_the_other_group_functions_by_hand():
    correct = _t([0, 0, 1, 0, 0, 1, 1, 1, 1])  # sizes (2, 3, 4): negative, mixed, all correct
    sizes = [2, 3, 4]
    assert group_kinds(correct, sizes).tolist() == [0, 1, 2]
    assert kept_groups(correct, sizes, keep_negative=True).tolist() == [True, True, False]
    assert kept_groups(correct, sizes, keep_negative=False).tolist() == [False, True, False]
    assert group_outcomes(correct, sizes) == {
        "groups/negative": 1 / 3,
        "groups/mixed": 1 / 3,
        "groups/all_correct": 1 / 3,
    }
    # uniform negative: -alpha on the negative group, GRPO elsewhere (the mixed 3-group as in the LENS case)
    expected = torch.cat([_t([-0.5, -0.5]), _t([2 / 3, -1 / 3, -1 / 3]) / (math.sqrt(1 / 3) + EPS), _t([0] * 4)])
    torch.testing.assert_close(uniform_negative_advantages(correct, sizes, alpha=0.5), expected)
    # NGRPO: a virtual 1 joins each group; negative group of 2: {0, 0, 1}, mean 1/3, std sqrt(1/3),
    # A = -(1/3) / sqrt(1/3) = -1/sqrt(3); all-correct group of 4: {1 x 5}, A = 0
    ngrpo = ngrpo_advantages(correct, sizes)
    torch.testing.assert_close(ngrpo[:2], _t([-1 / 3, -1 / 3]) / (math.sqrt(1 / 3) + EPS))
    assert ngrpo[5:].abs().max() == 0
    advantages = _t([-1, 2, 3, 0, 0, 0, 0, 0, -4])
    assert advantage_mass(advantages, correct, sizes) == (3.0, 10.0)
    assert negative_group_signal_share(advantages, correct, sizes) == 0.3


def test_group_rows_follow_the_offsets():
    sizes = [2, 4, 3]  # rows 0-1, 2-5, 6-8
    assert group_rows(torch.tensor([2, 0]), sizes).tolist() == [6, 7, 8, 0, 1]
    assert group_rows(torch.tensor([1]), sizes).tolist() == [2, 3, 4, 5]
    assert group_rows(torch.tensor([], dtype=torch.long), sizes).tolist() == []
    assert group_rows(torch.tensor([2, 0]), 3).tolist() == [6, 7, 8, 0, 1, 2]


# ---------------------------------------------------------------- a loop over the groups


def _random_case(sizes, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    p_right = torch.rand(len(sizes), generator=gen).repeat_interleave(torch.tensor(sizes))
    correct = (torch.rand(n, generator=gen) < p_right * 0.8).to(dtype)
    correct[: sizes[0]] = 0  # at least one negative group
    lengths = torch.randint(1, 40, (n,), generator=gen).to(dtype)
    seq = (-torch.rand(n, generator=gen) * lengths * 2).to(dtype)
    return correct, seq, lengths


def _loop(fn, sizes, *columns, per_group=False):
    """`fn(g, *columns of one group)` for each group alone (an int G), concatenated in order."""
    out, start = [], 0
    for g in sizes:
        result = fn(g, *(c[start : start + g] for c in columns))
        out.append(result.reshape(1) if per_group else result)
        start += g
    return torch.cat(out)


SIZE_MIXES = [
    [2, 4, 3, 3],
    [5, 2],
    [3, 7, 2, 2, 9, 3, 4, 16, 5],
    torch.randint(2, 12, (40,), generator=torch.Generator().manual_seed(7)).tolist(),
]


@pytest.mark.parametrize("sizes", SIZE_MIXES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_call_equals_a_loop_over_the_groups(sizes, dtype):
    correct, seq, lengths = _random_case(sizes, seed=len(sizes), dtype=dtype)
    # each group is computed as it is alone, vectorised over the groups of its size: equal up to the
    # round-off of a vectorised reduction (a ulp)
    for scale in ("group", "none"):
        torch.testing.assert_close(
            grpo_advantages(correct, sizes, scale),
            _loop(lambda g, r, scale=scale: grpo_advantages(r, g, scale), sizes, correct),
        )
        torch.testing.assert_close(
            uniform_negative_advantages(correct, sizes, 0.3, scale),
            _loop(lambda g, r, scale=scale: uniform_negative_advantages(r, g, 0.3, scale), sizes, correct),
        )
    # "batch": each group centred alone, divided by the std over all N rows
    centred = _loop(lambda g, r: grpo_advantages(r.double(), g, "none"), sizes, correct)
    torch.testing.assert_close(
        grpo_advantages(correct, sizes, "batch"), (centred / (correct.double().std() + EPS)).to(dtype)
    )
    torch.testing.assert_close(
        ngrpo_advantages(correct, sizes, 2.0), _loop(lambda g, r: ngrpo_advantages(r, g, 2.0), sizes, correct)
    )
    for d_estimator in ("normalized", "sequence"):
        torch.testing.assert_close(
            lens_rewards(correct, seq, lengths, sizes, d_estimator),
            _loop(lambda g, *x, d=d_estimator: lens_rewards(*x, g, d), sizes, correct, seq, lengths),
        )
        for scope in ("all", "mixed", "negative"):
            for normalize_negative in (False, True):
                settings = dict(alpha=0.7, scope=scope, d_estimator=d_estimator, normalize_negative=normalize_negative)
                torch.testing.assert_close(
                    lens_advantages(correct, seq, lengths, sizes, **settings),
                    _loop(lambda g, *x, kw=settings: lens_advantages(*x, g, **kw), sizes, correct, seq, lengths),
                )
    kinds = _loop(lambda g, c: group_kinds(c, g), sizes, correct, per_group=True)
    assert torch.equal(group_kinds(correct, sizes), kinds)
    assert GROUP_KINDS.index("negative") in kinds.tolist()
    for keep in (True, False):
        assert torch.equal(
            kept_groups(correct, sizes, keep),
            _loop(lambda g, c: kept_groups(c, g, keep), sizes, correct),  # noqa: B023
        )
    advantages = lens_advantages(correct, seq, lengths, sizes, alpha=5.0)
    negative = _loop(
        lambda g, a, c: a.double().abs().sum() * (c.sum() == 0), sizes, advantages, correct, per_group=True
    )
    mass = advantage_mass(advantages, correct, sizes)
    assert mass[0] == pytest.approx(negative.sum().item(), rel=1e-12) and mass[0] > 0
    assert mass[1] == pytest.approx(advantages.double().abs().sum().item(), rel=1e-12)
    metrics = group_metrics(correct, seq, lengths, advantages, sizes)
    assert metrics["groups/negative"] == pytest.approx((kinds == 0).double().mean().item())
    assert metrics["adv/negative_group_share"] == pytest.approx(mass[0] / mass[1])


# ---------------------------------------------------------------- equal sizes: the int path, bit for bit


@pytest.mark.parametrize("g", [2, 3, 8])
def test_equal_sizes_as_a_list_or_tensor_give_the_int_path_exactly(g):
    q = 11
    correct, seq, lengths = _random_case([g] * q, seed=g)
    for sizes in ([g] * q, (g,) * q, torch.full((q,), g)):
        assert group_layout(q * g, sizes) == g
        for scale in ("group", "batch", "none"):
            assert torch.equal(grpo_advantages(correct, sizes, scale), grpo_advantages(correct, g, scale))
            assert torch.equal(
                uniform_negative_advantages(correct, sizes, 0.3, scale),
                uniform_negative_advantages(correct, g, 0.3, scale),
            )
        assert torch.equal(ngrpo_advantages(correct, sizes), ngrpo_advantages(correct, g))
        for d_estimator in ("normalized", "sequence"):
            assert torch.equal(
                lens_rewards(correct, seq, lengths, sizes, d_estimator),
                lens_rewards(correct, seq, lengths, g, d_estimator),
            )
            for scope in ("all", "mixed", "negative"):
                for normalize_negative in (False, True):
                    kw = dict(scope=scope, d_estimator=d_estimator, normalize_negative=normalize_negative)
                    assert torch.equal(
                        lens_advantages(correct, seq, lengths, sizes, **kw),
                        lens_advantages(correct, seq, lengths, g, **kw),
                    )
        advantages = lens_advantages(correct, seq, lengths, g)
        assert torch.equal(group_kinds(correct, sizes), group_kinds(correct, g))
        assert torch.equal(kept_groups(correct, sizes, True), kept_groups(correct, g, True))
        assert advantage_mass(advantages, correct, sizes) == advantage_mass(advantages, correct, g)
        assert group_metrics(correct, seq, lengths, advantages, sizes) == group_metrics(
            correct, seq, lengths, advantages, g
        )


# ---------------------------------------------------------------- bad layouts


@pytest.mark.parametrize(
    "sizes, match",
    [
        ([2, 1, 3], ">= 2"),
        ([2, 0, 4], ">= 2"),
        ([2, 3], "sum to 5, not to the N=6"),
        ([4, 4], "sum to 8, not to the N=6"),
        ([], "at least one group"),
        ([2.0, 4.0], "ints"),
        ([True, 5], "ints"),
        (torch.tensor([2.0, 4.0]), "1-D integers"),
        (torch.tensor([[2, 4]]), "1-D integers"),
        ("24", "sequence"),
    ],
)
def test_bad_group_sizes_are_errors(sizes, match):
    r = _t([1, 0, 1, 0, 0, 0])
    with pytest.raises(ValueError, match=match):
        grpo_advantages(r, sizes)
    with pytest.raises(ValueError, match=match):
        lens_advantages(r, torch.full((6,), -1.0, dtype=torch.float64), torch.ones(6), sizes)
    with pytest.raises(ValueError, match=match):
        group_kinds(r, sizes)


def test_inputs_are_checked_before_groups_are_split():
    c, lp, n = _lens_inputs()
    with pytest.raises(ValueError, match="binary"):
        lens_advantages(_t([0, 0.5, 1, 0, 0]), lp, n, SIZES)
    with pytest.raises(ValueError, match="lengths has 4 entries"):
        lens_advantages(c, lp, n[:4], SIZES)
    with pytest.raises(ValueError, match="NaN"):
        grpo_advantages(_t([1, float("nan"), 1, 0, 0]), SIZES)
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(c, SIZES, scale="bogus")

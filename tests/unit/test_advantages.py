"""GRPO, LENS and the negative-group remedies against hand-worked cases (docs/algorithm.md Secs. 3-4, 9).

Convention in the cases: lengths = 1 unless stated, so seq_logprobs = log(pibar).
"""

import math

import pytest
import torch

from lensrl import grpo_advantages, lens_advantages, lens_rewards
from lensrl.core.advantages import ngrpo_advantages, w_reinforce_advantages


def _t(xs):
    return torch.tensor(xs, dtype=torch.float64)


def _inputs(correct, pibar, length=1):
    return _t(correct), _t([length * math.log(p) for p in pibar]), _t([length] * len(pibar))


def _grpo_ref(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return [(x - m) / (sd + 1e-6) for x in xs]


# ---------------------------------------------------------------- GRPO


def test_grpo_one_right_of_four():
    # r = [1,0,0,0]: mean 0.25, unbiased std sqrt((0.75^2 + 3*0.25^2)/3) = sqrt(0.25) = 0.5
    # A = [0.75, -0.25, -0.25, -0.25] / (0.5 + 1e-6)
    adv = grpo_advantages(_t([1, 0, 0, 0]), 4)
    expected = _t([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6)
    torch.testing.assert_close(adv, expected)


def test_grpo_batch_and_none_scales():
    r = _t([1, 0, 0, 0, 1, 1, 0, 0])
    # group means 0.25 and 0.5; batch mean 0.375, batch unbiased var = (3*0.625^2 + 5*0.375^2)/7 = 1.875/7
    batch_std = math.sqrt(1.875 / 7)  # 0.517549
    centred = _t([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])
    torch.testing.assert_close(grpo_advantages(r, 4, scale="batch"), centred / (batch_std + 1e-6))
    torch.testing.assert_close(grpo_advantages(r, 4, scale="none"), centred)
    assert grpo_advantages(r, 4, scale="batch")[0].item() == pytest.approx(1.449138, abs=1e-5)


def test_grpo_zero_variance_groups_get_zero():
    adv = grpo_advantages(_t([0, 0, 0, 0, 1, 1, 1, 1]), 4)
    assert torch.equal(adv, torch.zeros(8, dtype=torch.float64))


def test_grpo_group_sums_to_zero():
    r = torch.randint(0, 2, (64,)).double()
    assert grpo_advantages(r, 8).view(8, 8).sum(1).abs().max() < 1e-9


# ---------------------------------------------------------------- LENS rewards


def test_spec_worked_magnitudes_g16():
    # docs/algorithm.md Sec. 7, every pibar = 0.9:
    #   1 right of 16: D_imp = 1/((1/16)(1/0.9)) = 14.4 > 1.8, wrong r~ = -(1/16) 0.9/13.5 = -0.0041667
    #   8 right of 16: D_imp = 1/((1/16)(8/0.9)) = 1.8 = floor, wrong r~ = -(1/16) 0.9/0.9 = -1/16
    c, lp, n = _inputs([1] + [0] * 15, [0.9] * 16)
    assert lens_rewards(c, lp, n, 16)[1].item() == pytest.approx(-1 / 16 * 0.9 / 13.5, rel=1e-9)
    c, lp, n = _inputs([1] * 8 + [0] * 8, [0.9] * 16)
    assert lens_rewards(c, lp, n, 16)[-1].item() == pytest.approx(-1 / 16, rel=1e-9)


def test_mixed_group_importance_estimate_wins():
    # correct = [1,0,0,0], pibar = [0.5, 0.8, 0.4, 0.2]
    # D_imp = 1/((1/4)(1/0.5)) = 2.0 > floor 2*0.8 = 1.6, so D = 2
    # wrong: -(1/4) 0.8/1.2 = -1/6; -(1/4) 0.4/1.6 = -1/16; -(1/4) 0.2/1.8 = -1/36
    rt = lens_rewards(*_inputs([1, 0, 0, 0], [0.5, 0.8, 0.4, 0.2]), 4)
    torch.testing.assert_close(rt, _t([1, -1 / 6, -1 / 16, -1 / 36]))


def test_mixed_group_floor_wins():
    # correct = [1,0,0,0], pibar = [0.3, 0.9, 0.3, 0.6]
    # D_imp = 1/((1/4)(1/0.3)) = 1.2 < floor 1.8, so D = 1.8
    # wrong: -(1/4) 0.9/0.9 = -1/4 (the most confident gets exactly -1/G);
    #        -(1/4) 0.3/1.5 = -0.05; -(1/4) 0.6/1.2 = -0.125
    rt = lens_rewards(*_inputs([1, 0, 0, 0], [0.3, 0.9, 0.3, 0.6]), 4)
    torch.testing.assert_close(rt, _t([1, -0.25, -0.05, -0.125]))


def test_negative_group_rewards():
    # all wrong, pibar = [0.5, 0.8, 0.4, 0.2]: D = 2*0.8 = 1.6
    # r~ = -(1/4) [0.5/1.1, 0.8/0.8, 0.4/1.2, 0.2/1.4] = [-0.1136364, -0.25, -1/12, -1/28]
    rt = lens_rewards(*_inputs([0, 0, 0, 0], [0.5, 0.8, 0.4, 0.2]), 4)
    torch.testing.assert_close(rt, _t([-0.5 / 1.1 / 4, -0.25, -1 / 12, -1 / 28]))


def test_length_normalisation():
    # the same pibar reached with 3-token responses: seq_logprob = 3 log pibar, same rewards
    a = lens_rewards(*_inputs([1, 0, 0, 0], [0.5, 0.8, 0.4, 0.2]), 4)
    b = lens_rewards(*_inputs([1, 0, 0, 0], [0.5, 0.8, 0.4, 0.2], length=3), 4)
    torch.testing.assert_close(a, b)


def test_sequence_estimator_uses_raw_probability():
    # correct = [1,0,0,0], pibar = [0.5, 0.4, 0.25, 0.1], 3 tokens each.
    # normalized: D_imp = 4*0.5 = 2.0 > floor 1.0 -> wrong r~ = -(1/4)[0.4/1.6, 0.25/1.75, 0.1/1.9]
    # sequence:   raw p = 0.5^3 = 0.125, D_imp = 4*0.125 = 0.5 < floor 1.0 -> D = 1.0,
    #             wrong r~ = -(1/4)[0.4/0.6, 0.25/0.75, 0.1/0.9] = [-1/6, -1/12, -1/36]
    inputs = _inputs([1, 0, 0, 0], [0.5, 0.4, 0.25, 0.1], length=3)
    torch.testing.assert_close(lens_rewards(*inputs, 4), _t([1, -1 / 16, -1 / 28, -1 / 76]))
    torch.testing.assert_close(lens_rewards(*inputs, 4, d_estimator="sequence"), _t([1, -1 / 6, -1 / 12, -1 / 36]))


def test_sequence_estimator_survives_underflow():
    # 4,000 tokens at pibar 0.5: the raw probability 2^-4000 underflows float64; D_imp -> 0, the floor wins
    c, lp, n = _inputs([1, 0, 0, 0], [0.5, 0.8, 0.4, 0.2], length=4000)
    rt = lens_rewards(c, lp, n, 4, d_estimator="sequence")
    assert torch.isfinite(rt).all()
    torch.testing.assert_close(rt, _t([1, -0.25, -0.4 / 1.2 / 4, -0.2 / 1.4 / 4]))


def test_wrong_rewards_in_range_and_below_right():
    g = 8
    correct = torch.randint(0, 2, (64 * g,)).double()
    lengths = torch.randint(1, 50, (64 * g,)).double()
    seq = -torch.rand(64 * g).double() * lengths * 3
    rt = lens_rewards(correct, seq, lengths, g)
    wrong = rt[correct == 0]
    assert (wrong >= -1 / g - 1e-12).all() and (wrong < 0).all()
    assert (rt[correct == 1] == 1).all()


# ---------------------------------------------------------------- LENS advantages


def test_negative_group_defining_case():
    # The defining case: an all-wrong group has zero GRPO advantages but non-zero LENS advantages.
    # From test_negative_group_rewards: r~ = [-0.1136364, -0.25, -0.0833333, -0.0357143], mean -0.1206710
    # A = 0.25 (r~ - mean) = [0.0017587, -0.0323323, 0.0093344, 0.0212392]
    c, lp, n = _inputs([0, 0, 0, 0], [0.5, 0.8, 0.4, 0.2])
    assert torch.equal(grpo_advantages(c, 4), torch.zeros(4, dtype=torch.float64))
    adv = lens_advantages(c, lp, n, 4)
    torch.testing.assert_close(adv, _t([0.0017587, -0.0323323, 0.0093344, 0.0212392]), atol=1e-7, rtol=0)
    assert adv.sum().abs() < 1e-12
    assert adv[1] == adv.min()  # the most confident mistake is pushed down hardest


def test_mixed_group_advantages_normalise_calibrated_rewards():
    # r~ = [1, -1/6, -1/16, -1/36] (test_mixed_group_importance_estimate_wins):
    # mean 0.1857639, unbiased std 0.5460228 -> A = [1.49121, -0.64545, -0.45468, -0.39109]
    c, lp, n = _inputs([1, 0, 0, 0], [0.5, 0.8, 0.4, 0.2])
    adv = lens_advantages(c, lp, n, 4)
    torch.testing.assert_close(adv, _t([1.49121, -0.64545, -0.45468, -0.39109]), atol=1e-5, rtol=0)
    torch.testing.assert_close(adv, _t(_grpo_ref([1, -1 / 6, -1 / 16, -1 / 36])))


def test_equal_confidence_mixed_group_equals_grpo():
    # every wrong answer gets the same r~, and normalisation is affine-invariant: LENS = GRPO
    c, lp, n = _inputs([1, 0, 0, 0], [0.5] * 4)
    torch.testing.assert_close(lens_advantages(c, lp, n, 4), grpo_advantages(c, 4), atol=1e-5, rtol=0)


def test_all_correct_group_gets_zero():
    c, lp, n = _inputs([1, 1, 1, 1], [0.5, 0.8, 0.4, 0.2])
    assert torch.equal(lens_advantages(c, lp, n, 4), torch.zeros(4, dtype=torch.float64))


def test_alpha_scales_negative_groups_only():
    c, lp, n = _inputs([1, 0, 0, 0] + [0, 0, 0, 0], [0.5, 0.8, 0.4, 0.2] * 2)
    a = lens_advantages(c, lp, n, 4, alpha=0.25)
    b = lens_advantages(c, lp, n, 4, alpha=1.0)
    torch.testing.assert_close(a[:4], b[:4])
    torch.testing.assert_close(4 * a[4:], b[4:])
    assert torch.equal(lens_advantages(c, lp, n, 4, alpha=0.0)[4:], torch.zeros(4, dtype=torch.float64))
    # so alpha = 0 is LENS on mixed groups only, whatever alpha the mixed-only run carries (the alpha
    # study reuses the ablation's mixed-only runs as its alpha = 0 arm)
    assert torch.equal(lens_advantages(c, lp, n, 4, alpha=0.0), lens_advantages(c, lp, n, 4, scope="mixed"))


def test_scope_ablations():
    # a mixed group and a negative group with the same confidences
    c, lp, n = _inputs([1, 0, 0, 0] + [0, 0, 0, 0], [0.5, 0.8, 0.4, 0.2] * 2)
    full = lens_advantages(c, lp, n, 4, scope="all")
    mixed_only = lens_advantages(c, lp, n, 4, scope="mixed")
    negative_only = lens_advantages(c, lp, n, 4, scope="negative")
    torch.testing.assert_close(mixed_only[:4], full[:4])
    assert torch.equal(mixed_only[4:], torch.zeros(4, dtype=torch.float64))
    # scope="negative": mixed groups are plain GRPO on r = [1,0,0,0] -> [1.5, -0.5, -0.5, -0.5]
    torch.testing.assert_close(negative_only[:4], grpo_advantages(c[:4], 4))
    torch.testing.assert_close(negative_only[4:], full[4:])


def test_normalized_negative_groups_by_hand():
    # The negative group of test_negative_group_defining_case: r~ = -(1/4) pibar / (1.6 - pibar) =
    # [-0.1136364, -0.25, -0.0833333, -0.0357143], mean -0.1206710, unbiased std 0.0919913:
    # (r~ - mean) / (std + 1e-6) = [0.0764698, -1.4058671, 0.4058779, 0.9235194], times alpha 0.25
    c, lp, n = _inputs([0, 0, 0, 0], [0.5, 0.8, 0.4, 0.2])
    adv = lens_advantages(c, lp, n, 4, normalize_negative=True)
    torch.testing.assert_close(adv, _t([0.0191174, -0.3514668, 0.1014695, 0.2308798]), atol=1e-6, rtol=0)
    # the same ranking as without normalising, scaled up by 1 / std = 10.87
    plain = lens_advantages(c, lp, n, 4)
    torch.testing.assert_close(adv, plain / (0.0919913 + 1e-6), atol=1e-6, rtol=0)
    # mixed and all-correct groups are untouched
    c2, lp2, n2 = _inputs([1, 0, 0, 0] + [1, 1, 1, 1], [0.5, 0.8, 0.4, 0.2] * 2)
    assert torch.equal(lens_advantages(c2, lp2, n2, 4, normalize_negative=True), lens_advantages(c2, lp2, n2, 4))
    # equally confident wrong answers: std 0, so the advantages stay 0 (no division blows up)
    c3, lp3, n3 = _inputs([0, 0, 0, 0], [0.5] * 4)
    assert torch.equal(lens_advantages(c3, lp3, n3, 4, normalize_negative=True), torch.zeros(4, dtype=torch.float64))


def test_w_reinforce_and_nsr_by_hand():
    # Zhu et al. 2025: +lambda for a right answer, -1 for a wrong one, in every group, no baseline
    c = _t([1, 0, 1, 0] + [0, 0, 0, 0] + [1, 1, 1, 1])
    torch.testing.assert_close(w_reinforce_advantages(c, 0.1), _t([0.1, -1, 0.1, -1] + [-1] * 4 + [0.1] * 4))
    torch.testing.assert_close(w_reinforce_advantages(c, 0.0), _t([0, -1, 0, -1] + [-1] * 4 + [0] * 4))  # NSR
    assert w_reinforce_advantages(torch.tensor([True, False]), 0.5).tolist() == [0.5, -1.0]
    with pytest.raises(ValueError, match="binary"):
        w_reinforce_advantages(_t([0.5, 1.0]))
    with pytest.raises(ValueError, match="positive_weight"):
        w_reinforce_advantages(_t([0, 1]), -0.1)


def test_ngrpo_by_hand():
    # G = 8, one right answer; the virtual sample makes 9 rewards with 2 ones: mean' = 2/9,
    # unbiased std' = sqrt((2 (7/9)^2 + 7 (2/9)^2) / 8) = sqrt(126/648) = 0.4409586, so
    # A = (7/9) / std' = 1.7638342 for the right answer, -(2/9) / std' = -0.5039526 for the wrong ones
    # (GRPO: 2.4749, -0.3536)
    adv = ngrpo_advantages(_t([1, 0, 0, 0, 0, 0, 0, 0]), 8)
    torch.testing.assert_close(adv, _t([1.7638342] + [-0.5039526] * 7), atol=1e-5, rtol=0)  # eps moves the 6th digit
    # an all-wrong group of 16: mean' = 1/17, std' = sqrt(((16/17)^2 + 16 (1/17)^2) / 16) = 1/sqrt(17),
    # so every sample gets -1/sqrt(17) = -0.2425356; an all-correct group gets 0
    adv = ngrpo_advantages(_t([0] * 16 + [1] * 16), 16)
    torch.testing.assert_close(adv[:16], _t([-1 / math.sqrt(17)] * 16), atol=1e-6, rtol=0)
    assert torch.equal(adv[16:], torch.zeros(16, dtype=torch.float64))


def _ngrpo_loop(rewards, g, r_max=1.0, eps=1e-6):
    out = []
    for q in range(len(rewards) // g):
        xs = rewards[q * g : (q + 1) * g] + [r_max]
        m = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
        out += [(x - m) / (sd + eps) for x in xs[:-1]]
    return out


def test_ngrpo_vectorised_matches_loop():
    gen = torch.Generator().manual_seed(1)
    rewards = (torch.rand(30 * 6, generator=gen) < 0.4).double()
    torch.testing.assert_close(ngrpo_advantages(rewards, 6), _t(_ngrpo_loop(rewards.tolist(), 6)))
    graded = torch.rand(30 * 6, generator=gen).double()  # non-binary rewards, another r_max
    torch.testing.assert_close(ngrpo_advantages(graded, 6, r_max=2.0), _t(_ngrpo_loop(graded.tolist(), 6, 2.0)))


def _lens_loop(correct, pibar, g, alpha=0.25, eps=1e-6, normalize_negative=False):
    """Reference: one group at a time, plain Python floats, straight from docs/algorithm.md Sec. 3."""
    out = []
    for q in range(len(correct) // g):
        r, p = correct[q * g : (q + 1) * g], pibar[q * g : (q + 1) * g]
        floor = 2 * max(p)
        if sum(r) > 0:
            d = max(1 / (sum(ri / pi for ri, pi in zip(r, p)) / g), floor)
        else:
            d = floor
        rt = [ri - (1 - ri) * (1 / g) * pi / (d - pi) for ri, pi in zip(r, p)]
        if sum(r) == g:
            out += [0.0] * g
        elif sum(r) == 0:
            m = sum(rt) / g
            sd = math.sqrt(sum((x - m) ** 2 for x in rt) / (g - 1)) + eps if normalize_negative else 1.0
            out += [alpha * (x - m) / sd for x in rt]
        else:
            out += _grpo_ref(rt)
    return out


def test_vectorised_matches_loop():
    gen = torch.Generator().manual_seed(0)
    g = 8
    correct = (torch.rand(40 * g, generator=gen) < 0.3).double()
    lengths = torch.randint(1, 40, (40 * g,), generator=gen).double()
    seq = -torch.rand(40 * g, generator=gen).double() * lengths * 2
    pibar = (seq / lengths).exp().tolist()
    expected = _t(_lens_loop(correct.tolist(), pibar, g))
    torch.testing.assert_close(lens_advantages(correct, seq, lengths, g), expected)
    expected = _t(_lens_loop(correct.tolist(), pibar, g, normalize_negative=True))
    torch.testing.assert_close(lens_advantages(correct, seq, lengths, g, normalize_negative=True), expected)


def test_float32_and_bool_inputs():
    c, lp, n = _inputs([1, 0, 0, 0], [0.5, 0.8, 0.4, 0.2])
    adv = lens_advantages(c.bool(), lp.float(), n.long(), 4)
    assert adv.dtype == torch.float32
    torch.testing.assert_close(adv, lens_advantages(c, lp, n, 4).float())


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "correct, seq, lengths, g, match",
    [
        ([1, 0, 0, 0], [-1.0] * 4, [1, 0, 1, 1], 4, "lengths"),
        ([1, 0.5, 0, 0], [-1.0] * 4, [1] * 4, 4, "binary"),
        ([1, 0, 0], [-1.0] * 3, [1] * 3, 2, "divisible"),
        ([1, 0, 0, 0], [-1.0, float("nan"), -1.0, -1.0], [1] * 4, 4, "NaN"),
        ([1, 0, 0, 0], [-1.0] * 4, [1] * 3, 4, "lengths"),
    ],
)
def test_lens_rejects_bad_inputs(correct, seq, lengths, g, match):
    with pytest.raises(ValueError, match=match):
        lens_advantages(_t(correct), _t(seq), _t(lengths), g)


def test_grpo_rejects_bad_inputs():
    with pytest.raises(ValueError, match="divisible"):
        grpo_advantages(_t([1, 0, 0]), 2)
    with pytest.raises(ValueError, match="NaN"):
        grpo_advantages(_t([1, float("nan")]), 2)
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(_t([1, 0]), 2, scale="bogus")

"""Properties of the core math over many random rollouts (hypothesis), not just hand-picked cases.

Inputs are float64 with per-token log-probs in [-4, -1e-3], so every pibar lies in [e^-4, 1) and
no ratio pibar / (D - pibar) underflows: the strict inequalities below then hold exactly.
"""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lensrl import grpo_advantages, lens_advantages, lens_rewards, pass_at_k

SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def rollouts(draw, mixed_first: bool = False):
    """(correct, seq_logprobs, lengths, G) for Q groups of G samples; with `mixed_first` group 0 is mixed."""
    g = draw(st.integers(2, 8))
    q = draw(st.integers(1, 4))
    n = q * g
    correct = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    if mixed_first:
        correct[0], correct[1] = 1, 0
    lengths = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    per_token = draw(st.lists(st.floats(-4.0, -1e-3), min_size=n, max_size=n))
    return (
        torch.tensor(correct, dtype=torch.float64),
        torch.tensor([p * ln for p, ln in zip(per_token, lengths)], dtype=torch.float64),
        torch.tensor(lengths, dtype=torch.float64),
        g,
    )


def _permuted(tensors, perm):
    return [t[perm] for t in tensors]


@SETTINGS
@given(rollouts(mixed_first=True), st.sampled_from(["normalized", "sequence"]))
def test_lens_ranks_every_wrong_answer_below_every_right_one_in_a_mixed_group(batch, d_estimator):
    correct, seq, lengths, g = batch
    adv = lens_advantages(correct, seq, lengths, g, d_estimator=d_estimator)
    group = slice(0, g)
    right, wrong = adv[group][correct[group] == 1], adv[group][correct[group] == 0]
    assert wrong.max() < right.min()


@SETTINGS
@given(rollouts(), st.sampled_from(["normalized", "sequence"]))
def test_wrong_answers_get_calibrated_rewards_in_minus_one_over_g_to_zero(batch, d_estimator):
    correct, seq, lengths, g = batch
    r = lens_rewards(correct, seq, lengths, g, d_estimator)
    wrong = r[correct == 0]
    assert (wrong >= -1.0 / g).all() and (wrong < 0).all()
    assert (r[correct == 1] == 1).all()


@SETTINGS
@given(rollouts(), st.data(), st.sampled_from(["all", "mixed", "negative"]))
def test_lens_is_equivariant_to_permuting_samples_within_groups(batch, data, scope):
    correct, seq, lengths, g = batch
    q = len(correct) // g
    perm = torch.cat([i * g + torch.tensor(data.draw(st.permutations(range(g)))) for i in range(q)])
    adv = lens_advantages(correct, seq, lengths, g, scope=scope)
    adv_perm = lens_advantages(*_permuted((correct, seq, lengths), perm), g, scope=scope)
    torch.testing.assert_close(adv_perm, adv[perm], rtol=0, atol=1e-12)


@SETTINGS
@given(rollouts(), st.data())
def test_lens_and_grpo_are_equivariant_to_permuting_groups(batch, data):
    correct, seq, lengths, g = batch
    q = len(correct) // g
    order = data.draw(st.permutations(range(q)))
    perm = torch.cat([torch.arange(i * g, (i + 1) * g) for i in order])
    adv = lens_advantages(correct, seq, lengths, g)
    torch.testing.assert_close(
        lens_advantages(*_permuted((correct, seq, lengths), perm), g), adv[perm], rtol=0, atol=1e-12
    )
    torch.testing.assert_close(grpo_advantages(correct[perm], g), grpo_advantages(correct, g)[perm], rtol=0, atol=1e-12)


@SETTINGS
@given(rollouts(), st.sampled_from(["group", "batch", "none"]))
def test_grpo_advantages_of_a_group_sum_to_zero(batch, scale):
    correct, _, _, g = batch
    sums = grpo_advantages(correct, g, scale).view(-1, g).sum(dim=1)
    torch.testing.assert_close(sums, torch.zeros_like(sums), rtol=0, atol=1e-9)


@SETTINGS
@given(rollouts())
def test_lens_negative_groups_are_de_meaned_and_scaled_by_alpha(batch):
    correct, seq, lengths, g = batch
    a1 = lens_advantages(correct, seq, lengths, g, alpha=1.0).view(-1, g)
    a_half = lens_advantages(correct, seq, lengths, g, alpha=0.5).view(-1, g)
    negative = correct.view(-1, g).sum(dim=1) == 0
    torch.testing.assert_close(
        a1[negative].sum(dim=1), torch.zeros(int(negative.sum()), dtype=a1.dtype), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(a_half[negative], 0.5 * a1[negative], rtol=0, atol=1e-15)
    torch.testing.assert_close(a_half[~negative], a1[~negative], rtol=0, atol=0)


@SETTINGS
@given(st.integers(1, 64), st.data())
def test_pass_at_k_is_monotone_in_c_and_k_and_bounded(n, data):
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    p = pass_at_k(n, c, k)
    assert 0.0 <= p <= 1.0
    if c < n:
        assert pass_at_k(n, c + 1, k) >= p
    if k < n:
        assert pass_at_k(n, c, k + 1) >= p
    assert (p == 0.0) == (c == 0)

"""The clipped surrogate, its aggregation modes and the k3 KL term, against hand-worked values."""

import math

import pytest
import torch

from lensrl import k3_kl, policy_loss


def _lp(ratios):
    """log-probs whose ratio to an all-zero old log-prob tensor is `ratios`."""
    return torch.tensor(ratios, dtype=torch.float64).log()


def test_aggregation_modes_at_ratio_one():
    # ratio 1 everywhere, so each token's loss is -A. A = [2, -1]; seq 0 has 2 tokens, seq 1 has 1.
    logprobs = torch.zeros(2, 2, dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([2.0, -1.0], dtype=torch.float64)
    # seq-mean-token-mean: mean(-2, +1) = -0.5
    loss, _ = policy_loss(logprobs, logprobs, adv, mask)
    assert loss.item() == pytest.approx(-0.5)
    # token-mean: (-2 - 2 + 1) / 3 tokens = -1
    loss, _ = policy_loss(logprobs, logprobs, adv, mask, agg="token-mean")
    assert loss.item() == pytest.approx(-1.0)
    # seq-mean-token-sum-norm with a fixed length 2: (-4 + 1) / (2 * 2) = -0.75
    loss, _ = policy_loss(logprobs, logprobs, adv, mask, agg="seq-mean-token-sum-norm")
    assert loss.item() == pytest.approx(-0.75)


@pytest.mark.parametrize(
    "ratio, adv, clip_high, expected, clipped",
    [
        (1.5, 1.0, 0.2, -1.2, 1.0),  # min(1.5, 1.2) * 1 = 1.2: clipped above
        (1.5, 1.0, 0.28, -1.28, 1.0),  # separate upper clip (DAPO clip-higher)
        (0.5, -1.0, 0.2, 0.8, 1.0),  # min(-0.5, -0.8) = -0.8: clipped below
        (1.5, -1.0, 0.2, 1.5, 0.0),  # min(-1.5, -1.2) = -1.5: the pessimistic branch is unclipped
        (0.5, 1.0, 0.2, -0.5, 0.0),  # min(0.5, 0.8) = 0.5: unclipped
    ],
)
def test_clipping(ratio, adv, clip_high, expected, clipped):
    logprobs = _lp([[ratio]])
    loss, metrics = policy_loss(
        logprobs, torch.zeros_like(logprobs), torch.tensor([adv]), torch.ones(1, 1), clip_high=clip_high
    )
    assert loss.item() == pytest.approx(expected)
    assert metrics["clipfrac"] == clipped


def test_gradient_vanishes_when_clipped():
    logprobs = _lp([[1.5]]).requires_grad_()
    loss, _ = policy_loss(logprobs, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0]), torch.ones(1, 1))
    loss.backward()
    assert logprobs.grad.item() == 0.0


def test_k3_kl_value():
    # lp = log 0.5, ref = log 0.25: ref - lp = log 0.5; k3 = 0.5 - log 0.5 - 1 = 0.193147
    val = k3_kl(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert val.item() == pytest.approx(0.5 - math.log(0.5) - 1, rel=1e-6)
    assert k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0


def test_kl_term_added_only_with_coefficient():
    lp = torch.zeros(1, 1, dtype=torch.float64)
    ref = torch.tensor([[math.log(0.5)]], dtype=torch.float64)
    base, _ = policy_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 1))
    with_kl, m = policy_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 1), logprobs_ref=ref, kl_coef=0.1)
    # k3 at ref - lp = log 0.5: 0.5 - log 0.5 - 1 = 0.193147; times 0.1
    assert with_kl.item() - base.item() == pytest.approx(0.1 * (0.5 - math.log(0.5) - 1))
    assert m["kl_ref"] == pytest.approx(0.193147, abs=1e-6)
    with pytest.raises(ValueError, match="logprobs_ref"):
        policy_loss(lp, lp, torch.tensor([1.0]), torch.ones(1, 1), kl_coef=0.1)


def test_approx_kl_metric():
    # ratio 2 on one token: (2 - 1) - log 2 = 0.306853
    lp = _lp([[2.0]])
    _, m = policy_loss(lp, torch.zeros_like(lp), torch.tensor([1.0]), torch.ones(1, 1))
    assert m["approx_kl"] == pytest.approx(1 - math.log(2))


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_sum_to_whole_batch(agg):
    gen = torch.Generator().manual_seed(0)
    n, t = 8, 6
    old = -torch.rand(n, t, generator=gen, dtype=torch.float64)
    new = (old + 0.3 * torch.randn(n, t, generator=gen, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(n, generator=gen, dtype=torch.float64)
    mask = (torch.rand(n, t, generator=gen) < 0.7).double()
    mask[:, 0] = 1
    whole, _ = policy_loss(new, old, adv, mask, agg=agg)
    parts = sum(
        policy_loss(
            new[i : i + 3],
            old[i : i + 3],
            adv[i : i + 3],
            mask[i : i + 3],
            agg=agg,
            num_seqs=n,
            num_tokens=int(mask.sum()),
            norm_length=t,
        )[0]
        for i in range(0, n, 3)
    )
    torch.testing.assert_close(parts, whole)


def test_empty_response_rejected():
    lp = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="at least one token"):
        policy_loss(lp, lp, torch.ones(2), torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


def test_masked_positions_cannot_overflow_the_ratio():
    # Two responses of different lengths share a width: row 1's second column is padding, where the
    # behaviour pass left 0 and the current pass a pad-token log-prob of -100. Unmasked, exp(0 - -100)
    # = e^100 overflows float32 to inf, and inf * mask 0 = NaN poisons the loss and its gradient.
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -100.0]], requires_grad=True)
    logprobs_old = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    for kl_coef in (0.0, 0.1):
        ref = logprobs_old if kl_coef else None  # the k3 term exponentiates (ref - lp) the same way
        loss, metrics = policy_loss(logprobs, logprobs_old, adv, mask, logprobs_ref=ref, kl_coef=kl_coef)
        loss.backward()
        assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in metrics.values())
        assert torch.isfinite(logprobs.grad).all() and logprobs.grad[1, 1] == 0
        # ratio 1 on every real token: loss = mean over responses of -A = (-1 + 1) / 2 = 0, KL 0
        assert loss.item() == pytest.approx(0.0) and metrics["clipfrac"] == 0.0
        # d loss / d lp: -A_i * ratio / (tokens of i) / N responses: row 0: -1/2/2, row 1: +1/1/2
        assert logprobs.grad.tolist() == [[-0.25, -0.25], [0.5, 0.0]]
        logprobs.grad = None

"""pass@k and selective log-probs."""

import pytest
import torch

from lensrl import pass_at_k, selective_logprobs


def test_pass_at_k_hand_values():
    assert pass_at_k(16, 0, 16) == 0.0
    assert pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(16, 4, 1) == pytest.approx(0.25)  # k = 1 is c / n
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(16, 1, 16) == 1.0  # n - c < k: every draw of 16 holds the right one


def test_pass_at_k_monotone():
    for c in range(16):
        assert pass_at_k(16, c, 4) <= pass_at_k(16, c + 1, 4)
    for k in range(1, 16):
        assert pass_at_k(16, 3, k) <= pass_at_k(16, 3, k + 1)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_bad_inputs(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_selective_logprobs_match_full_log_softmax(temperature):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen)
    tokens = torch.randint(0, 11, (3, 5), generator=gen)
    lp, ent = selective_logprobs(logits, tokens, temperature, with_entropy=True, chunk_tokens=4)
    full = torch.log_softmax(logits / temperature, dim=-1)
    torch.testing.assert_close(lp, full.gather(-1, tokens[..., None]).squeeze(-1))
    torch.testing.assert_close(ent, torch.distributions.Categorical(logits=logits / temperature).entropy())


def test_selective_logprobs_upcast_bf16():
    logits = torch.randn(2, 3, 7).bfloat16()
    lp, _ = selective_logprobs(logits, torch.zeros(2, 3, dtype=torch.long))
    assert lp.dtype == torch.float32

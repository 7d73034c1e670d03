"""Token log-probabilities and entropies of sampled tokens, without full float32 log-softmax tensors.

Logits are divided by the sampling temperature (the behaviour policy is the tempered one), and the
log-softmax is taken per chunk of positions, so peak memory stays at one chunk of (positions, V) in
float32. `head_logprobs` goes further and makes the logits themselves chunk by chunk from the final
hidden states, so a 4,096-token response over a 150k vocabulary never holds (N, T, V) logits.
"""

from __future__ import annotations

import torch


def _token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor]:  # (M,), (M,) (zeros when no entropy is wanted)
    logits = logits.float() / temperature
    logz = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, tokens[:, None]).squeeze(-1) - logz
    if not with_entropy:
        return lp, torch.zeros_like(lp)
    with torch.no_grad():
        logp = logits - logz[:, None]
        return lp, -(logp.exp() * logp).sum(-1)


def head_logprobs(
    hidden: torch.Tensor,  # (N, T, H) final hidden states at the positions that predict `tokens`
    head: torch.nn.Module,  # the output layer: (M, H) -> (M, V)
    tokens: torch.Tensor,  # (N, T)
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # (N, T), (N, T) or None
    """Like `selective_logprobs`, but the logits themselves are made one chunk of positions at a time.

    Peak memory is one chunk of (chunk_tokens, V) float32 logits instead of (N, T, V). When gradients
    are needed each chunk is checkpointed: its logits are recomputed in the backward pass, not kept.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    n, t, h = hidden.shape
    flat_hidden, flat_tokens = hidden.reshape(n * t, h), tokens.reshape(n * t)

    def chunk_fn(hid: torch.Tensor, tok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _token_logprobs(head(hid), tok, temperature, with_entropy)

    grad = torch.is_grad_enabled() and hidden.requires_grad
    out_lp, out_ent = [], []
    for start in range(0, n * t, chunk_tokens):
        hid, tok = flat_hidden[start : start + chunk_tokens], flat_tokens[start : start + chunk_tokens]
        if grad:
            lp, ent = torch.utils.checkpoint.checkpoint(chunk_fn, hid, tok, use_reentrant=False)
        else:
            lp, ent = chunk_fn(hid, tok)
        out_lp.append(lp)
        out_ent.append(ent)
    lp = torch.cat(out_lp).view(n, t)
    return lp, (torch.cat(out_ent).view(n, t) if with_entropy else None)


def selective_logprobs(
    logits: torch.Tensor,  # (N, T, V)
    tokens: torch.Tensor,  # (N, T)
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # (N, T), (N, T) or None
    """log pi(token | prefix) of the given tokens at `temperature`, and optionally the token entropies."""
    return head_logprobs(logits, torch.nn.Identity(), tokens, temperature, with_entropy, chunk_tokens)

"""Token log-probabilities and entropies of sampled tokens, without full float32 log-softmax tensors.

Logits are divided by the sampling temperature (the behaviour policy is the tempered one), and the
log-softmax is taken per chunk of rows so peak memory stays at one chunk of (rows, V) in float32.
"""

from __future__ import annotations

import torch


def selective_logprobs(
    logits: torch.Tensor,  # (N, T, V)
    tokens: torch.Tensor,  # (N, T)
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_rows: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # (N, T), (N, T) or None
    """log pi(token | prefix) of the given tokens at `temperature`, and optionally the token entropies."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature}")
    n, t, v = logits.shape
    flat_logits = logits.reshape(n * t, v)
    flat_tokens = tokens.reshape(n * t)
    out_lp, out_ent = [], []
    for start in range(0, n * t, chunk_rows):
        chunk = flat_logits[start : start + chunk_rows].float() / temperature
        logz = torch.logsumexp(chunk, dim=-1)
        out_lp.append(chunk.gather(-1, flat_tokens[start : start + chunk_rows, None]).squeeze(-1) - logz)
        if with_entropy:
            with torch.no_grad():
                logp = chunk - logz[:, None]
                out_ent.append(-(logp.exp() * logp).sum(-1))
    lp = torch.cat(out_lp).view(n, t)
    ent = torch.cat(out_ent).view(n, t) if with_entropy else None
    return lp, ent

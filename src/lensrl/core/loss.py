"""The GRPO clipped surrogate (paper Eq. 3), shared unchanged by GRPO and LENS.

Per token: l = -min(rho A, clip(rho, 1 - clip_low, 1 + clip_high) A), rho = pi_theta / pi_old,
plus kl_coef * k3(pi_theta || pi_ref) when a reference policy is given. Aggregation:
  seq-mean-token-mean      mean over responses of the mean over their tokens (paper Eq. 3, default)
  token-mean               mean over all tokens of the batch (DAPO)
  seq-mean-token-sum-norm  per-response token sum divided by a fixed length, then mean (Dr. GRPO)
When a batch is split into micro-batches, pass `num_seqs` / `num_tokens` of the whole batch so that
summing micro-batch losses gives exactly the whole batch's loss.
"""

from __future__ import annotations

from typing import Literal

import torch

LossAgg = Literal["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"]


def k3_kl(logprobs: torch.Tensor, logprobs_ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - lp) - (ref - lp) - 1 >= 0 (0 where `mask` is 0)."""
    log_ratio = _masked(logprobs_ref - logprobs, mask)
    return log_ratio.exp() - log_ratio - 1.0


def _masked(log_ratio: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The log-ratio with masked positions set to 0 before anything is exponentiated: padding pairs
    arbitrary log-probs (a pad token's can be below -88, whose exp overflows float32) and a 0 * inf
    there would turn the loss and its gradient into NaN."""
    return log_ratio if mask is None else torch.where(mask > 0, log_ratio, torch.zeros((), dtype=log_ratio.dtype,
                                                                                     device=log_ratio.device))


def policy_loss(
    logprobs: torch.Tensor,  # (N, T) current policy, with grad
    logprobs_old: torch.Tensor,  # (N, T) behaviour policy, detached
    advantages: torch.Tensor,  # (N,)
    mask: torch.Tensor,  # (N, T) 1 on response tokens
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: LossAgg = "seq-mean-token-mean",
    logprobs_ref: torch.Tensor | None = None,  # (N, T) reference policy, detached
    kl_coef: float = 0.0,
    num_seqs: int | None = None,
    num_tokens: int | None = None,
    norm_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy-gradient loss and its health metrics (clip fraction, approximate KL to pi_old)."""
    mask = mask.to(logprobs.dtype)
    log_ratio = _masked(logprobs - logprobs_old.detach(), mask)
    ratio = log_ratio.exp()
    adv = advantages.detach().to(logprobs.dtype).unsqueeze(1)  # (N, 1)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)  # (N, T)
    kl_ref = None
    if kl_coef != 0.0:
        if logprobs_ref is None:
            raise ValueError("kl_coef != 0 needs logprobs_ref")
        kl_ref = k3_kl(logprobs, logprobs_ref.detach(), mask)
        per_token = per_token + kl_coef * kl_ref

    seq_tokens = mask.sum(dim=1)  # (N,)
    if (seq_tokens == 0).any():
        raise ValueError("every response needs at least one token in the mask")
    if agg == "seq-mean-token-mean":
        loss = ((per_token * mask).sum(dim=1) / seq_tokens).sum() / (num_seqs or mask.shape[0])
    elif agg == "token-mean":
        loss = (per_token * mask).sum() / (num_tokens or mask.sum())
    elif agg == "seq-mean-token-sum-norm":
        loss = (per_token * mask).sum() / ((norm_length or mask.shape[1]) * (num_seqs or mask.shape[0]))
    else:
        raise ValueError(f"unknown loss aggregation {agg!r}")

    with torch.no_grad():
        n_tok = mask.sum()
        is_clipped = (clipped > unclipped).to(mask.dtype)
        metrics = {
            "loss/policy": loss.item(),
            "clipfrac": ((is_clipped * mask).sum() / n_tok).item(),
            "approx_kl": (((ratio - 1.0) - log_ratio) * mask).sum().div(n_tok).item(),
        }
        if kl_ref is not None:
            metrics["kl_ref"] = ((kl_ref * mask).sum() / n_tok).item()
    return loss, metrics

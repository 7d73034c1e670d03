"""What tells a researcher a step's rollouts are healthy: rewards, group outcomes, confidence, lengths."""

from __future__ import annotations

import dataclasses
import math

import torch

from lensrl.config import AlgoConfig
from lensrl.core.advantages import group_outcomes, negative_group_signal_share
from lensrl.estimators import get_estimator
from lensrl.rollout.sampler import Rollout
from lensrl.rollout.verifier import VerifyCounts
from lensrl.rollout.verify import extract_answer


def rollout_metrics(rollout: Rollout, advantages: torch.Tensor, algo: AlgoConfig) -> dict[str, float]:
    """One step's rollout metrics (keys as in metrics.jsonl), plus the estimator's own, if it has any.

    reward: share of correct responses; groups/*: shares of negative, mixed and all-correct groups;
    pibar/*: mean confidence of right and wrong responses; adv/negative_group_share: the negative
    groups' share of the advantage mass sum |A_i|.
    """
    correct, g = rollout.correct, rollout.group_size
    pibar = (rollout.seq_logprobs / rollout.lengths).exp()
    mask = rollout.response_mask
    lengths = rollout.lengths
    metrics = {
        "reward": correct.mean().item(),
        **group_outcomes(correct, g),
        "pibar/correct": pibar[correct > 0].mean().item() if (correct > 0).any() else math.nan,
        "pibar/wrong": pibar[correct == 0].mean().item() if (correct == 0).any() else math.nan,
        "entropy": ((rollout.entropy * mask).sum() / mask.sum()).item(),
        "prompt_len/mean": rollout.prompt_mask.sum(dim=1).float().mean().item(),
        "response_len/mean": lengths.mean().item(),
        "response_len/max": lengths.max().item(),
        "truncated": rollout.truncated.float().mean().item(),
        "unparseable": sum(extract_answer(c) is None for c in rollout.completions) / len(rollout.completions),
        "adv/abs_mean": advantages.abs().mean().item(),
        "adv/negative_group_share": negative_group_signal_share(advantages, correct, g),
    }
    extra = get_estimator(algo.advantage).metrics
    return metrics | (extra(rollout, algo) if extra is not None else {})


def verifier_metrics(counts: VerifyCounts) -> dict[str, int]:
    """verify/calls, verify/unparseable, verify/timeouts, verify/retries, verify/errors and
    verify/worker_restarts: what the verifier counted (`VerifyCounts`) while scoring one step's rollout."""
    return {f"verify/{f.name}": getattr(counts, f.name) for f in dataclasses.fields(counts)}

"""What tells a researcher a step's rollouts are healthy: rewards, group outcomes, confidence, lengths."""

from __future__ import annotations

import dataclasses
import math

import torch

from lensrl.config import AlgoConfig
from lensrl.core.advantages import group_metrics
from lensrl.data.answers import extract_answer
from lensrl.records import ScoredRollout
from lensrl.rollout.verifier import VerifyCounts


def rollout_metrics(rollout: ScoredRollout, advantages: torch.Tensor, algo: AlgoConfig) -> dict[str, float]:
    """One step's rollout metrics (keys as in metrics.jsonl), plus the estimator's own, if it has any.

    reward: share of correct responses; groups/*: shares of negative, mixed and all-correct groups;
    pibar/*: mean confidence of right and wrong responses; no_final_answer: share of responses with
    no `\\boxed{}` or `####` final answer (`data.answers.extract_answer`), whatever the verifier (its
    own count of answers it could not read is `verify/unparseable`, `verifier_metrics`);
    adv/negative_group_share: the negative groups' share of the advantage mass sum |A_i|.
    """
    mask, lengths = rollout.response_mask, rollout.lengths
    metrics = {
        "reward": rollout.correct.mean().item(),
        **group_metrics(rollout.correct, rollout.seq_logprobs, lengths, advantages, rollout.group_size),
        "entropy": ((rollout.entropy * mask).sum() / mask.sum()).item(),
        "prompt_len/mean": rollout.prompt_mask.sum(dim=1).float().mean().item(),
        "response_len/mean": lengths.mean().item(),
        "response_len/max": lengths.max().item(),
        "truncated": rollout.truncated.float().mean().item(),
        "no_final_answer": sum(extract_answer(c) is None for c in rollout.completions) / len(rollout.completions),
        "adv/abs_mean": advantages.abs().mean().item(),
    }
    return metrics | algo.metrics(rollout)


def verifier_metrics(counts: VerifyCounts) -> dict[str, int]:
    """verify/calls, verify/unparseable, verify/timeouts, verify/retries, verify/errors and
    verify/worker_restarts: what the verifier counted (`VerifyCounts`) while scoring one step's rollout."""
    return {f"verify/{f.name}": getattr(counts, f.name) for f in dataclasses.fields(counts)}


def progress_postfix(metrics: dict[str, float]) -> dict[str, str]:
    """What the progress bar shows of a step's metrics record: reward (the share of correct responses,
    metrics.jsonl's `reward`), lens_r (LENS's mean calibrated reward `lens/calibrated_reward`, only when
    the estimator logs it), neg (`groups/negative`), kl (`approx_kl`) and clip (`clipfrac`), NaN when
    the step did not update."""
    postfix = {"reward": f"{metrics['reward']:.3f}"}
    if "lens/calibrated_reward" in metrics:
        postfix["lens_r"] = f"{metrics['lens/calibrated_reward']:.3f}"
    return postfix | {
        "neg": f"{metrics['groups/negative']:.2f}",
        "kl": f"{metrics.get('approx_kl', math.nan):.4f}",
        "clip": f"{metrics.get('clipfrac', math.nan):.3f}",
    }

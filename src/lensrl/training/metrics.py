"""What tells a researcher a step's rollouts are healthy: rewards, group outcomes, confidence, lengths."""

from __future__ import annotations

import dataclasses
import math

import torch

from lensrl.config import AlgoConfig, TrainConfig
from lensrl.core.advantages import group_metrics
from lensrl.data.answers import extract_answer
from lensrl.records import Compute, ScoredRollout
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


def compute_metrics(compute: Compute, prefix: str = "") -> dict[str, int]:
    """`compute/<field>` (with a `prefix`: `compute/<prefix><field>`) for each field of a `Compute`:
    prompts, samples, tokens, samples_updated; a step's without prefix, the run's totals with "total_"."""
    return {f"compute/{prefix}{name}": value for name, value in compute.to_json().items()}


def compute_from_metrics(records: list[dict], config: TrainConfig) -> Compute:
    """The compute of a run's metrics.jsonl records, added up: how the totals of a checkpoint written
    before compute accounting are rebuilt (from the records up to its step).

    A record with `compute/*` gives its own; an older one is derived from the config and its other
    metrics: `rollout.questions_per_step` prompts, times `rollout.group_size` samples, tokens
    `response_len/mean` x samples (rounded: exact below 2^23 tokens a step, the float32 mean's
    precision) and the samples of the `groups/updated` share of the groups (0 in a step whose update
    was skipped whole, which logs no such share)."""
    q, g = config.rollout.questions_per_step, config.rollout.group_size
    total = Compute()
    for r in records:
        if "compute/samples" in r:
            total += Compute(*(int(r[f"compute/{name}"]) for name in Compute().to_json()))
        else:
            updated = round(r["groups/updated"] * q) * g if "groups/updated" in r else 0
            total += Compute(q, q * g, round(r["response_len/mean"] * q * g), updated)
    return total


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

"""Advantage estimators by name: `algo.advantage` picks one, the trainer calls it without knowing which.

An estimator maps a scored rollout with behaviour log-probs to one advantage per response. Adding
one is a function and its registration:

    @register("my_estimator", negative_groups_signal=False)
    def my_estimator(rollout: Rollout, algo: AlgoConfig) -> torch.Tensor:  # (N,)
        ...

`negative_groups_signal` says whether all-wrong groups carry a learning signal under it, which
decides what `algo.filter_groups` keeps. `metrics` optionally adds estimator-specific numbers to
each step's metrics. The math itself lives in `lensrl.core.advantages` as pure functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from lensrl.core.advantages import grpo_advantages, lens_advantages, lens_rewards, uniform_negative_advantages

if TYPE_CHECKING:  # types only: the config and the rollout import nothing from here
    from lensrl.config import AlgoConfig
    from lensrl.rollout.sampler import Rollout

AdvantageFn = Callable[["Rollout", "AlgoConfig"], torch.Tensor]
MetricsFn = Callable[["Rollout", "AlgoConfig"], dict[str, float]]


@dataclass(frozen=True)
class Estimator:
    name: str
    advantages: AdvantageFn
    negative_groups_signal: bool  # all-wrong groups get nonzero advantages: filtering keeps them
    metrics: MetricsFn | None = None


ESTIMATORS: dict[str, Estimator] = {}


def register(
    name: str, *, negative_groups_signal: bool = False, metrics: MetricsFn | None = None
) -> Callable[[AdvantageFn], AdvantageFn]:
    """Register an advantage function under `name` (a decorator)."""

    def add(fn: AdvantageFn) -> AdvantageFn:
        if name in ESTIMATORS:
            raise ValueError(f"an advantage estimator named {name!r} is already registered")
        ESTIMATORS[name] = Estimator(name, fn, negative_groups_signal, metrics)
        return fn

    return add


def get_estimator(name: str) -> Estimator:
    """The estimator registered under `name`; an unknown name is an error naming the known ones."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {', '.join(sorted(ESTIMATORS))}")
    return ESTIMATORS[name]


def compute_advantages(algo: AlgoConfig, rollout: Rollout) -> torch.Tensor:  # (N,)
    """The configured estimator's advantages for a scored rollout with behaviour log-probs."""
    return get_estimator(algo.advantage).advantages(rollout, algo)


@register("grpo")
def grpo(rollout: Rollout, algo: AlgoConfig) -> torch.Tensor:
    """Group-normalised correctness (docs/algorithm.md Sec. 1)."""
    return grpo_advantages(rollout.correct, rollout.group_size, algo.scale, algo.eps)


def _calibrated_reward(rollout: Rollout, algo: AlgoConfig) -> dict[str, float]:
    if not torch.isfinite(rollout.seq_logprobs).all():
        return {}
    rewards = lens_rewards(rollout.correct, rollout.seq_logprobs, rollout.lengths, rollout.group_size,
                           algo.d_estimator)
    return {"lens/calibrated_reward": rewards.mean().item()}


@register("lens", negative_groups_signal=True, metrics=_calibrated_reward)
def lens(rollout: Rollout, algo: AlgoConfig) -> torch.Tensor:
    """LENS: calibrated rewards for wrong answers, weighted by the policy's confidence (Sec. 3)."""
    return lens_advantages(rollout.correct, rollout.seq_logprobs, rollout.lengths, rollout.group_size,
                           **asdict(algo.lens))


@register("uniform_negative", negative_groups_signal=True)
def uniform_negative(rollout: Rollout, algo: AlgoConfig) -> torch.Tensor:
    """GRPO plus a flat -alpha on every response of an all-wrong group (the remedies study's baseline)."""
    return uniform_negative_advantages(rollout.correct, rollout.group_size, algo.alpha, algo.scale, algo.eps)

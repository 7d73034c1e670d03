"""Advantage estimators by name: `algo.advantage` picks one, the trainer calls it without knowing which.

An estimator maps a scored rollout with behaviour log-probs to one advantage per response, given
its settings: the `algo` model registered with it. Adding one is a settings model in
`lensrl.config` (a subclass of `AlgoBase` with `advantage: Literal["my_estimator"]` and the fields
the function reads, added to the `AlgoConfig` union), the function and its registration:

    @register("my_estimator", settings=MyEstimatorAlgo, negative_groups_signal=False)
    def my_estimator(rollout: Rollout, algo: MyEstimatorAlgo) -> torch.Tensor:  # (N,)
        ...

`negative_groups_signal` says whether all-wrong groups carry a learning signal under it, which
decides what `algo.filter_groups` keeps. `metrics` optionally adds estimator-specific numbers to
each step's metrics. The math itself lives in `lensrl.core.advantages` as pure functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from lensrl.config import (
    AlgoBase,
    AlgoConfig,
    GRPOAlgo,
    LensAlgo,
    NGRPOAlgo,
    NSRAlgo,
    UniformNegativeAlgo,
    WReinforceAlgo,
)
from lensrl.core.advantages import (
    grpo_advantages,
    lens_advantages,
    lens_rewards,
    ngrpo_advantages,
    uniform_negative_advantages,
    w_reinforce_advantages,
)

if TYPE_CHECKING:  # types only: the rollout imports nothing from here
    from lensrl.rollout.sampler import Rollout

S = TypeVar("S", bound=AlgoBase)
AdvantageFn = Callable[["Rollout", S], torch.Tensor]
MetricsFn = Callable[["Rollout", S], dict[str, float]]


@dataclass(frozen=True)
class Estimator:
    name: str
    settings: type[AlgoBase]  # the `algo` model it reads (its `advantage` is `name`)
    advantages: AdvantageFn[Any]
    negative_groups_signal: bool  # all-wrong groups get nonzero advantages: filtering keeps them
    metrics: MetricsFn[Any] | None = None


ESTIMATORS: dict[str, Estimator] = {}


def register(
    name: str, *, settings: type[S], negative_groups_signal: bool = False, metrics: MetricsFn[S] | None = None
) -> Callable[[AdvantageFn[S]], AdvantageFn[S]]:
    """Register an advantage function under `name`, reading the settings model `settings` (a decorator)."""
    if settings.model_fields["advantage"].default != name:
        raise ValueError(
            f"the settings of estimator {name!r} must have advantage={name!r}, {settings.__name__} has "
            f"{settings.model_fields['advantage'].default!r}"
        )

    def add(fn: AdvantageFn[S]) -> AdvantageFn[S]:
        if name in ESTIMATORS:
            raise ValueError(f"an advantage estimator named {name!r} is already registered")
        ESTIMATORS[name] = Estimator(name, settings, fn, negative_groups_signal, metrics)
        return fn

    return add


def get_estimator(name: str) -> Estimator:
    """The estimator registered under `name`; an unknown name is an error naming the known ones."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {', '.join(sorted(ESTIMATORS))}")
    return ESTIMATORS[name]


def compute_advantages(algo: AlgoConfig | AlgoBase, rollout: Rollout) -> torch.Tensor:  # (N,)
    """The configured estimator's advantages for a scored rollout with behaviour log-probs."""
    return get_estimator(algo.advantage).advantages(rollout, algo)


@register("grpo", settings=GRPOAlgo)
def grpo(rollout: Rollout, algo: GRPOAlgo) -> torch.Tensor:
    """Group-normalised correctness (docs/algorithm.md Sec. 1)."""
    return grpo_advantages(rollout.correct, rollout.group_size, algo.scale, algo.eps)


def _calibrated_reward(rollout: Rollout, algo: LensAlgo) -> dict[str, float]:
    if not torch.isfinite(rollout.seq_logprobs).all():
        return {}
    rewards = lens_rewards(rollout.correct, rollout.seq_logprobs, rollout.lengths, rollout.group_size, algo.d_estimator)
    return {"lens/calibrated_reward": rewards.mean().item()}


@register("lens", settings=LensAlgo, negative_groups_signal=True, metrics=_calibrated_reward)
def lens(rollout: Rollout, algo: LensAlgo) -> torch.Tensor:
    """LENS: calibrated rewards for wrong answers, weighted by the policy's confidence (Sec. 3)."""
    return lens_advantages(
        rollout.correct, rollout.seq_logprobs, rollout.lengths, rollout.group_size, **asdict(algo.lens)
    )


@register("uniform_negative", settings=UniformNegativeAlgo, negative_groups_signal=True)
def uniform_negative(rollout: Rollout, algo: UniformNegativeAlgo) -> torch.Tensor:
    """GRPO plus a flat -alpha on every response of an all-wrong group (the remedies study's baseline)."""
    return uniform_negative_advantages(rollout.correct, rollout.group_size, algo.alpha, algo.scale, algo.eps)


@register("w_reinforce", settings=WReinforceAlgo, negative_groups_signal=True)
def w_reinforce(rollout: Rollout, algo: WReinforceAlgo) -> torch.Tensor:
    """W-REINFORCE (Zhu et al. 2025): +lambda for right answers, -1 for wrong ones (docs/algorithm.md Sec. 9)."""
    return w_reinforce_advantages(rollout.correct, algo.positive_weight)


@register("nsr", settings=NSRAlgo, negative_groups_signal=True)
def nsr(rollout: Rollout, algo: NSRAlgo) -> torch.Tensor:
    """NSR (Zhu et al. 2025): -1 for wrong answers, 0 for right ones (docs/algorithm.md Sec. 9)."""
    return w_reinforce_advantages(rollout.correct, positive_weight=0.0)


@register("ngrpo", settings=NGRPOAlgo, negative_groups_signal=True)
def ngrpo(rollout: Rollout, algo: NGRPOAlgo) -> torch.Tensor:
    """NGRPO's advantage calibration (Nan et al. 2025): a virtual maximum reward in every group's
    statistics (docs/algorithm.md Sec. 9)."""
    return ngrpo_advantages(rollout.correct, rollout.group_size, algo.r_max, algo.eps)

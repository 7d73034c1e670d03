"""`algo`: the advantage estimator, its settings, and what it computes.

`algo` is a discriminated union on `algo.advantage`: the settings every estimator shares
(`AlgoBase`: filter_groups, clip_low, clip_high, loss_agg, kl_coef) and those of the chosen
estimator only (`LensAlgo`: alpha, scope, d_estimator, eps, normalize_negative; `GRPOAlgo`: scale,
eps; `UniformNegativeAlgo`: alpha, scale, eps; `WReinforceAlgo`: positive_weight; `NSRAlgo`: none;
`NGRPOAlgo`: r_max, eps). A setting the chosen estimator does not read is an error naming it
("algo.scope does not apply to algo.advantage=grpo (it reads: scale, eps)").

Each model is its estimator: `advantages(rollout)` maps a scored rollout to one advantage per
response (the math is `lensrl.core.advantages`' pure functions, imported when first called, so
reading a config needs no torch), `negative_groups_signal` says whether all-wrong groups carry a
signal under it (which decides what `algo.filter_groups` keeps), and `metrics(rollout)` adds
estimator-specific numbers to each step's metrics. The union is the one registry: adding an
estimator is one model here (a subclass of `AlgoBase` with `advantage: Literal["my_estimator"]`,
its settings and its `advantages`), added to `AlgoConfig`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from lensrl.config.section import Section
from lensrl.core.settings import AdvantageScale, DEstimator, LensScope, LensSettings, read_lens_settings

if TYPE_CHECKING:
    import torch

    from lensrl.records import ScoredRollout

DEFAULT_ESTIMATOR = "lens"


class AlgoBase(Section):
    """The settings every advantage estimator shares: the clipped loss and group filtering. Each
    estimator's model (`AlgoConfig`) adds its name (`advantage`) and the settings it reads."""

    negative_groups_signal: ClassVar[bool] = True
    """Whether all-wrong groups get nonzero advantages under this estimator (filtering then keeps them)."""

    advantage: str
    """Advantage estimator (module docstring), which decides the other settings `algo` takes."""
    filter_groups: bool = False
    """DAPO-style filtering: leave groups without a learning signal out of the update (no refill): groups
    without reward variance, except that negative groups stay where the estimator gives them a signal
    (LENS, uniform_negative). Every rollout still takes optim.updates_per_rollout minibatches."""
    normalize_by: Literal["all", "kept"] = "all"
    """The rows each minibatch's loss is averaged over: "all", its every response; "kept", the responses
    of its groups that `filter_groups` would keep, while every group stays in the update. "kept" gives an
    unfiltered run filtering's larger gradient without dropping anything (groups without a signal have
    advantage 0 and add nothing to the gradient), a control for what filtering does."""
    clip_low: float = Field(0.2, ge=0, lt=1)
    """Lower ratio clip: rho >= 1 - clip_low."""
    clip_high: float = Field(0.2, ge=0)
    """Upper ratio clip: rho <= 1 + clip_high."""
    loss_agg: Literal["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"] = "seq-mean-token-mean"
    """How per-token losses are averaged (paper Eq. 3 is the default)."""
    kl_coef: float = Field(0.0, ge=0)
    """k3 KL penalty to the initial policy; the reference model is loaded only when > 0."""

    def advantages(self, rollout: ScoredRollout) -> torch.Tensor:  # (N,)
        """One advantage per response of a scored rollout with behaviour log-probs; groups of different
        sizes (a tuple `rollout.group_size`) are passed on to the core functions, each group with its own."""
        raise NotImplementedError

    def metrics(self, rollout: ScoredRollout) -> dict[str, float]:
        """Numbers of this estimator's own for a step's metrics (none by default)."""
        return {}


class LensAlgo(AlgoBase):
    """LENS (`algo.advantage=lens`, the default): the settings of `lensrl.core.settings.LensSettings`,
    which validates them (alpha a finite number >= 0, eps a finite number > 0)."""

    advantage: Literal["lens"] = "lens"
    """"lens": GRPO's advantages with calibrated rewards for wrong answers, and a signal in negative groups."""
    alpha: float = LensSettings.alpha
    """Weight of negative-group advantages (the paper uses 0.25)."""
    scope: LensScope = LensSettings.scope
    """Ablation: recalibrate wrong answers in all groups, mixed groups only, or negative groups only."""
    d_estimator: DEstimator = LensSettings.d_estimator
    """D(q)'s importance estimate from length-normalised (pibar) or raw sequence probabilities."""
    eps: float = LensSettings.eps
    """Added to the std in mixed groups' advantage normalisation."""
    normalize_negative: bool = LensSettings.normalize_negative
    """Negative groups: alpha (r~ - mean) / (std + eps), normalised like mixed groups, not alpha (r~ - mean)."""

    @field_validator("alpha", "scope", "d_estimator", "eps", "normalize_negative")
    @classmethod
    def _lens_setting(cls, value: Any, info: ValidationInfo) -> Any:
        read_lens_settings({info.field_name: value}, "algo.")
        return value

    @property
    def lens(self) -> LensSettings:
        """These settings as the `LensSettings` that `lens_advantages` takes."""
        return LensSettings(self.alpha, self.scope, self.d_estimator, self.eps, self.normalize_negative)

    def advantages(self, rollout: ScoredRollout) -> torch.Tensor:
        """LENS: calibrated rewards for wrong answers, weighted by the confidence (docs/algorithm.md Sec. 3)."""
        from lensrl.core.advantages import lens_advantages

        return lens_advantages(
            rollout.correct, rollout.seq_logprobs, rollout.lengths, rollout.group_size, **dataclasses.asdict(self.lens)
        )

    def metrics(self, rollout: ScoredRollout) -> dict[str, float]:
        """lens/calibrated_reward: the mean of LENS's calibrated rewards r~ (absent when log-probs are not finite)."""
        import torch

        from lensrl.core.advantages import lens_rewards

        if not torch.isfinite(rollout.seq_logprobs).all():
            return {}
        rewards = lens_rewards(
            rollout.correct, rollout.seq_logprobs, rollout.lengths, rollout.group_size, self.d_estimator
        )
        return {"lens/calibrated_reward": rewards.mean().item()}


class GroupNormalised(AlgoBase):
    """GRPO's normalisation of the rewards, which grpo and uniform_negative share."""

    scale: AdvantageScale = "group"
    """GRPO advantage scale: group std, batch std, or none."""
    eps: float = Field(1e-6, gt=0, allow_inf_nan=False)
    """Added to the std in advantage normalisation."""


class GRPOAlgo(GroupNormalised):
    """GRPO (`algo.advantage=grpo`): group-normalised correctness."""

    negative_groups_signal: ClassVar[bool] = False

    advantage: Literal["grpo"] = "grpo"
    """"grpo": group-normalised correctness; negative groups get 0."""

    def advantages(self, rollout: ScoredRollout) -> torch.Tensor:
        """Group-normalised correctness (docs/algorithm.md Sec. 1)."""
        from lensrl.core.advantages import grpo_advantages

        return grpo_advantages(rollout.correct, rollout.group_size, self.scale, self.eps)


class UniformNegativeAlgo(GroupNormalised):
    """GRPO plus a flat penalty on every sample of an all-wrong group (`algo.advantage=uniform_negative`)."""

    advantage: Literal["uniform_negative"] = "uniform_negative"
    """"uniform_negative": GRPO with a flat -alpha on every sample of a negative group."""
    alpha: float = Field(0.25, ge=0, allow_inf_nan=False)
    """The flat penalty: every sample of a negative group gets the advantage -alpha."""

    def advantages(self, rollout: ScoredRollout) -> torch.Tensor:
        """GRPO plus a flat -alpha on every response of an all-wrong group (the remedies study's baseline)."""
        from lensrl.core.advantages import uniform_negative_advantages

        return uniform_negative_advantages(rollout.correct, rollout.group_size, self.alpha, self.scale, self.eps)


class WReinforceAlgo(AlgoBase):
    """W-REINFORCE (`algo.advantage=w_reinforce`; Zhu et al. 2025): +positive_weight for a right answer,
    -1 for a wrong one, in every group, with no baseline and no normalisation."""

    advantage: Literal["w_reinforce"] = "w_reinforce"
    """"w_reinforce": REINFORCE on +1 / -1 rewards with the positive term down-weighted."""
    positive_weight: float = Field(0.1, ge=0, allow_inf_nan=False)
    """lambda, the weight of right answers (the paper's 0.1); 0 is NSR."""

    def advantages(self, rollout: ScoredRollout) -> torch.Tensor:
        """+lambda for right answers, -1 for wrong ones (docs/algorithm.md Sec. 9)."""
        from lensrl.core.advantages import w_reinforce_advantages

        return w_reinforce_advantages(rollout.correct, self.positive_weight)


class NSRAlgo(AlgoBase):
    """NSR, negative sample reinforcement (`algo.advantage=nsr`; Zhu et al. 2025): -1 on every wrong answer,
    0 on every right one, in every group; W-REINFORCE with positive_weight 0. Unlike the authors' code,
    which drops the right answers from the batch, the right answers stay in it with advantage 0 and
    count in the loss's normaliser (docs/algorithm.md Sec. 9)."""

    advantage: Literal["nsr"] = "nsr"
    """"nsr": each wrong answer pushed down with advantage -1; right answers get 0 and stay in the loss's mean."""

    def advantages(self, rollout: ScoredRollout) -> torch.Tensor:
        """-1 for wrong answers, 0 for right ones (docs/algorithm.md Sec. 9)."""
        from lensrl.core.advantages import w_reinforce_advantages

        return w_reinforce_advantages(rollout.correct, positive_weight=0.0)


class NGRPOAlgo(AlgoBase):
    """NGRPO's advantage calibration (`algo.advantage=ngrpo`; Nan et al. 2025): GRPO with a virtual
    sample of reward r_max in each group's mean and std."""

    advantage: Literal["ngrpo"] = "ngrpo"
    """"ngrpo": group normalisation over the G rewards plus one virtual maximum reward."""
    r_max: float = Field(1.0, allow_inf_nan=False)
    """The virtual sample's reward (the maximum reward; 1 for 0/1 correctness)."""
    eps: float = Field(1e-6, gt=0, allow_inf_nan=False)
    """Added to the std in advantage normalisation."""

    def advantages(self, rollout: ScoredRollout) -> torch.Tensor:
        """A virtual maximum reward in every group's statistics (docs/algorithm.md Sec. 9)."""
        from lensrl.core.advantages import ngrpo_advantages

        return ngrpo_advantages(rollout.correct, rollout.group_size, self.r_max, self.eps)


AlgoConfig = Annotated[
    LensAlgo | GRPOAlgo | UniformNegativeAlgo | WReinforceAlgo | NSRAlgo | NGRPOAlgo, Field(discriminator="advantage")
]
"""`algo`: one model per registered estimator, chosen by `algo.advantage` (module docstring)."""

ALGOS: dict[str, type[AlgoBase]] = {m.model_fields["advantage"].default: m for m in get_args(get_args(AlgoConfig)[0])}
"""Estimator name -> its model, read off the `AlgoConfig` union."""


def own_settings(name: str) -> list[str]:
    """The settings estimator `name` reads besides the common ones (`AlgoBase`'s)."""
    return [f for f in ALGOS[name].model_fields if f not in AlgoBase.model_fields]


def switch_estimator(algo: AlgoConfig, name: str) -> AlgoConfig:
    """`algo` with estimator `name`: the common settings and those `name` shares with `algo`'s estimator
    (same name, same setting) kept, the rest of `name`'s at their defaults."""
    return ALGOS[name].model_validate(switched_settings(algo.model_dump(), name))


def switched_settings(algo: dict[str, Any], name: str) -> dict[str, Any]:
    """An `algo` mapping switched to estimator `name` (`switch_estimator`'s rule), not yet validated."""
    return {k: v for k, v in algo.items() if k in ALGOS[name].model_fields} | {"advantage": name}

"""How a step chooses its prompts and spends its samples (`rollout.selection`), one model per way.

`uniform` is the usual rollout: the next Q prompts of the data order, G samples each. The others
spend rollouts differently on the groups that carry no learning signal (docs/algorithm.md, "Spending
rollouts on groups without a signal"); `lensrl.rollout.select` carries them out. Every way counts
what it generated, dropped groups included (compute/* in metrics.jsonl), so runs can be compared at
equal compute.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from lensrl.config.section import Section


class UniformSelection(Section):
    """The next `rollout.questions_per_step` prompts of the data order, `rollout.group_size` samples each."""

    kind: Literal["uniform"] = "uniform"
    """"uniform": every step samples Q new prompts, G samples each."""


class DynamicSelection(Section):
    """DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476; verl's `algorithm.filter_groups`): sample
    rounds of prompts, drop the groups without a learning signal, and go on until Q groups are kept."""

    kind: Literal["dynamic"] = "dynamic"
    """"dynamic": over-sample, drop groups without a learning signal, refill to Q groups."""
    round_prompts: int | None = Field(None, ge=1)
    """Prompts sampled per generation round (None: `rollout.questions_per_step`)."""
    max_rounds: int = Field(10, ge=1)
    """Generation rounds at most per step; a step that has fewer than Q kept groups after them trains on
    those it has (verl stops the run instead)."""


class GresoSelection(Section):
    """GRESO's selective rollouts ("Act Only When It Pays", arXiv 2506.02177; the authors' code
    Infini-AI-Lab/GRESO):
    before the rollout, skip each prompt whose most recent visits were all zero-variance with a
    probability that grows with that streak, then fill the batch by dynamic sampling rounds.

    A prompt whose last z visits were all right (easy) or all wrong (hard) is kept with probability
    max(p^z, `min_keep`), p being `p_easy` or `p_hard`; a prompt never generated is always kept. After
    each step, p_easy falls by `p_step` when at least `target_zero_variance`/3 of the step's groups were
    all right and rises otherwise; p_hard likewise with 2 * `target_zero_variance`/3 and all-wrong
    groups. The round sizes scale the authors' numbers of prompts (rounds of 384 kept prompts for 256
    trained, at least 64) to the batch: 1.5 Q and Q/4, so that a Q of 32 gets the authors' proportions
    instead of a floor of 64 that would exceed the whole batch. The other defaults are the authors'.
    Easy and hard are all right and all wrong, for the skip rule and for p's targets alike; the
    departures from the authors' code are in docs/algorithm.md, "Spending rollouts on groups without
    a signal"."""

    kind: Literal["greso"] = "greso"
    """"greso": skip prompts that were zero-variance lately, then dynamic sampling."""
    target_zero_variance: float = Field(0.25, gt=0, lt=1)
    """The share of zero-variance groups the skip probabilities steer each step toward (the authors'
    alpha, 0.25): alpha/3 all-right groups and 2 alpha/3 all-wrong ones, the larger share for the hard
    prompts because they are the likelier to become useful as the policy improves."""
    p_initial: float = Field(0.5, gt=0, le=1)
    """The first value of p_easy and p_hard, each prompt's keep probability per zero-variance visit (the
    authors' 0.5)."""
    p_step: float = Field(0.01, ge=0)
    """How far p_easy and p_hard move once a step (the authors' 0.01, fixed in their code)."""
    p_min: float = Field(0.05, gt=0, le=1)
    """The least p_easy and p_hard go down to (the authors' 0.05)."""
    p_max: float = Field(0.95, gt=0, le=1)
    """The most p_easy and p_hard go up to (the authors' 0.95)."""
    min_keep: float = Field(0.01, gt=0, le=1)
    """The least probability with which a prompt is kept, however long its streak (the authors' 1%):
    every prompt keeps a chance to show that it has become useful."""
    first_round: float = Field(1.5, gt=0)
    """Kept prompts in a step's first round, and the most in any round, as a multiple of Q (rounded up):
    the authors' 384 for a batch of 256 prompts."""
    min_round: float = Field(0.25, gt=0)
    """The fewest kept prompts in a later round, as a multiple of Q (rounded up): the authors' 64 for 256."""
    refill_margin: float = Field(1.25, ge=1)
    """A later round samples the missing groups divided by the share of the previous round's groups that
    had a signal, times this margin (the authors' 1.25), between `min_round` and `first_round`."""
    max_rounds: int = Field(10, ge=1)
    """Generation rounds at most per step, after which a step trains on the groups it has (the authors
    have no cap; 10 as `dynamic`)."""

    @model_validator(mode="after")
    def _ordered(self) -> GresoSelection:
        if not self.p_min <= self.p_initial <= self.p_max:
            raise ValueError("greso needs p_min <= p_initial <= p_max")
        if self.min_round > self.first_round:
            raise ValueError("greso needs min_round <= first_round")
        return self


class KnapsackSelection(Section):
    """Knapsack RL (Li et al. 2025, arXiv 2509.25849; the authors' code, liziniu/KnapsackRL): the step's
    Q x G samples spread over its Q prompts by their estimated success rates (`lensrl.core.knapsack`,
    docs/algorithm.md Sec. 10), so groups have different sizes. The estimates come from each prompt's
    past groups in the run. The authors' script runs G = 8 with an estimate window of 16 rewards, an
    estimate from 8 rewards on, at least 2 and at most 128 samples a prompt; here the window and the
    first estimate scale with G (2 G and G), the other amounts are theirs."""

    kind: Literal["knapsack"] = "knapsack"
    """"knapsack": a fixed Q x G samples a step, each prompt's share from its estimated success rate."""
    min_samples: int = Field(2, ge=2)
    """Samples at least for a prompt with an estimate (every group needs 2 for its statistics)."""
    max_samples: int = Field(128, ge=2)
    """The knapsack programme gives a prompt at most this many (leftovers and the all-wrong prompts' surplus
    may exceed it, as in the authors' code)."""
    window: int | None = Field(None, ge=1)
    """Rewards an estimate averages, the latest first (None: 2 x rollout.group_size)."""
    min_history: int | None = Field(None, ge=1)
    """Rewards a prompt needs before it has an estimate; before that it gets rollout.group_size samples
    (None: rollout.group_size)."""
    alpha: float = Field(0.9, gt=0, lt=1)
    """The fallback's confidence: a mixed prompt is thought to need ln(1 - alpha) / ln(max(p, 1 - p))
    samples; what the mixed prompts do not need goes to the all-wrong ones."""

    @model_validator(mode="after")
    def _bounds(self) -> KnapsackSelection:
        if self.max_samples < self.min_samples:
            raise ValueError("knapsack needs min_samples <= max_samples")
        return self


SelectionConfig = Annotated[
    UniformSelection | DynamicSelection | GresoSelection | KnapsackSelection, Field(discriminator="kind")
]

"""How a step chooses its prompts and spends its samples (`rollout.selection`), one model per way.

`uniform` is the usual rollout: the next Q prompts of the data order, G samples each. The others
spend rollouts differently on the groups that carry no learning signal (docs/algorithm.md, "Spending
rollouts"); `lensrl.rollout.select` carries them out. Every way counts what it generated, dropped
groups included (compute/* in metrics.jsonl), so runs can be compared at equal compute.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

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


SelectionConfig = Annotated[UniformSelection | DynamicSelection, Field(discriminator="kind")]

"""Which prompts a step samples and how many samples each gets (`rollout.selection`).

    uniform   the next Q prompts of the data order, G samples each (one `collect_rollout`)
    dynamic   DAPO's dynamic sampling: rounds of prompts; the groups without a learning signal are
              dropped and rounds go on until Q groups are kept (or `max_rounds`); the first Q kept
              groups, earliest round first, make the step's rollout

A selector returns the step's `Collected`: the rollout the update uses, and the compute and verifier
counts of everything it generated, dropped groups included. Every generated group is also written
to the `PromptHistory` (each prompt's past groups, by problem id), which selectors that look back
read and checkpoints keep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lensrl.config import TrainConfig
from lensrl.config.selection import DynamicSelection, UniformSelection
from lensrl.core.advantages import kept_groups
from lensrl.records import Compute, Problem, ScoredRollout
from lensrl.rollout.collect import Collected
from lensrl.rollout.gather import merge_rollouts, select_groups
from lensrl.rollout.verifier import VerifyCounts
from lensrl.seeds import round_seed

Take = Callable[[int], list[Problem]]
"""The next n prompts of the run's data order."""
Collect = Callable[[Sequence[Problem], int, Sequence[int] | None], Collected]
"""`collect_rollout` of the run's model: (problems, sampling seed, sample counts or None for G each)."""


@dataclass
class PromptHistory:
    """Every group a run generated, by problem id: (step, samples, correct answers), oldest first."""

    visits: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)

    def record(self, rollout: ScoredRollout, step: int) -> None:
        correct = rollout.correct.double()
        for problem, start, end in zip(rollout.problems, rollout.group_offsets, rollout.group_offsets[1:]):
            right = int(correct[start:end].sum().item())
            self.visits.setdefault(problem.id, []).append((step, end - start, right))

    def to_json(self) -> dict[str, list[list[int]]]:
        return {key: [list(v) for v in visits] for key, visits in self.visits.items()}

    @classmethod
    def from_json(cls, record: dict[str, list[list[int]]]) -> PromptHistory:
        return cls({key: [(int(a), int(b), int(c)) for a, b, c in visits] for key, visits in record.items()})


@dataclass(frozen=True)
class Selected:
    """A step's rollout for the update, with what generating it counted and how many rounds it took."""

    collected: Collected
    metrics: dict[str, float]


class Selector:
    """A step's prompts and samples, by `rollout.selection`; `history` is kept across steps."""

    def __init__(self, config: TrainConfig, pad_token_id: int, history: PromptHistory | None = None) -> None:
        self.config, self.pad_token_id, self.history = config, pad_token_id, history or PromptHistory()

    def _collect(self, collect: Collect, problems: Sequence[Problem], seed: int, step: int, samples=None) -> Collected:
        collected = collect(problems, seed, samples)
        self.history.record(collected.rollout, step)
        return collected

    def select(self, step: int, take: Take, collect: Collect) -> Selected:
        raise NotImplementedError

    def state(self) -> dict:
        """What a checkpoint keeps so that a resumed run selects as an uninterrupted one would."""
        return {"history": self.history.to_json()}


class UniformSelector(Selector):
    def select(self, step: int, take: Take, collect: Collect) -> Selected:
        ro = self.config.rollout
        collected = self._collect(collect, take(ro.questions_per_step), round_seed(self.config.run.seed, step, 0), step)
        return Selected(collected, {})


class DynamicSelector(Selector):
    """DAPO's dynamic sampling. Which groups count as carrying a learning signal is `algo.filter_groups`'
    rule (`core.advantages.kept_groups`): mixed groups, and negative groups too under an estimator that
    gives them a signal (LENS)."""

    def select(self, step: int, take: Take, collect: Collect) -> Selected:
        config, q = self.config, self.config.rollout.questions_per_step
        options: DynamicSelection = config.rollout.selection
        per_round = options.round_prompts or q
        kept_parts: list[ScoredRollout] = []
        compute, verified, n_kept, rounds = Compute(), VerifyCounts(), 0, 0
        while n_kept < q and rounds < options.max_rounds:
            collected = self._collect(collect, take(per_round), round_seed(config.run.seed, step, rounds), step)
            rollout = collected.rollout
            compute, verified, rounds = compute + collected.compute, verified + collected.verified, rounds + 1
            keep = kept_groups(rollout.correct, rollout.group_size, config.algo.negative_groups_signal)
            groups = torch.nonzero(keep.cpu()).flatten()[: q - n_kept]
            if len(groups):
                kept_parts.append(select_groups(rollout, groups))
                n_kept += len(groups)
        if not kept_parts:  # nothing kept: the last round's groups, which give the update no signal
            kept_parts = [rollout]
        merged = merge_rollouts(kept_parts, self.pad_token_id)
        metrics = {"selection/rounds": rounds, "selection/kept_groups": n_kept, "selection/short": float(n_kept < q)}
        return Selected(Collected(merged, verified, compute), metrics)


SELECTORS: dict[type, type[Selector]] = {UniformSelection: UniformSelector, DynamicSelection: DynamicSelector}


def selector(config: TrainConfig, pad_token_id: int, state: dict | None = None) -> Selector:
    """The selector of `config.rollout.selection`, with the history a checkpoint kept (`Selector.state`)."""
    history = PromptHistory.from_json(state["history"]) if state else None
    return SELECTORS[type(config.rollout.selection)](config, pad_token_id, history)

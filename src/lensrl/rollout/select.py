"""Which prompts a step samples and how many samples each gets (`rollout.selection`).

    uniform   the next Q prompts of the data order, G samples each (one `collect_rollout`)
    dynamic   DAPO's dynamic sampling: rounds of prompts; the groups without a learning signal are
              dropped and rounds go on until Q groups are kept (or `max_rounds`); the first Q kept
              groups, earliest round first, make the step's rollout
    greso     GRESO: before each round, prompts whose recent visits were all zero-variance are skipped
              with a probability that adapts toward a target share; then dynamic sampling's rounds
    knapsack  Knapsack RL: the next Q prompts share Q x G samples by their estimated success rates
              (`core.knapsack`), so groups have different sizes

A selector returns the step's `Collected`: the rollout the update uses, and the compute and verifier
counts of everything it generated, dropped groups included. Every generated group is also written
to the `PromptHistory` (each prompt's past groups, by problem id), which selectors that look back
read and checkpoints keep.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lensrl.config import TrainConfig
from lensrl.config.selection import DynamicSelection, GresoSelection, KnapsackSelection, UniformSelection
from lensrl.core.advantages import GROUP_KINDS, group_kinds, kept_groups
from lensrl.core.knapsack import allocate_samples, estimate_success
from lensrl.records import Compute, Problem, ScoredRollout
from lensrl.rollout.collect import Collected
from lensrl.rollout.gather import merge_rollouts, select_groups
from lensrl.rollout.verifier import VerifyCounts
from lensrl.seeds import round_seed, skip_seed

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


@dataclass(frozen=True)
class Round:
    """One generation round's groups: how many, how many had a learning signal (`kept_groups`, before
    any were cut), and how many were all right and all wrong."""

    groups: int
    signal: int
    all_right: int
    all_wrong: int

    @classmethod
    def of(cls, rollout: ScoredRollout, keep: torch.Tensor) -> Round:
        kinds = group_kinds(rollout.correct, rollout.group_size).cpu()
        right, wrong = (int((kinds == GROUP_KINDS.index(k)).sum().item()) for k in ("all_correct", "negative"))
        return cls(len(keep), int(keep.sum().item()), right, wrong)


NextRound = Callable[[Sequence[Round], int], Sequence[Problem]]
"""The prompts of a step's next generation round, from the rounds so far and the groups still missing."""


class Selector:
    """A step's prompts and samples, by `rollout.selection`; `history` is kept across steps."""

    def __init__(self, config: TrainConfig, pad_token_id: int) -> None:
        self.config, self.pad_token_id, self.history = config, pad_token_id, PromptHistory()

    def _collect(self, collect: Collect, problems: Sequence[Problem], seed: int, step: int, samples=None) -> Collected:
        collected = collect(problems, seed, samples)
        self.history.record(collected.rollout, step)
        return collected

    def _fill(
        self, step: int, collect: Collect, next_round: NextRound, max_rounds: int
    ) -> tuple[Selected, list[Round]]:
        """DAPO's dynamic sampling: generation rounds of `next_round`'s prompts, each group with a learning
        signal kept (`algo.filter_groups`' rule, `core.advantages.kept_groups`: mixed groups, and negative
        groups too under an estimator that gives them a signal, LENS), until Q groups are kept or
        `max_rounds` rounds were sampled. The first Q kept groups, earliest round first, make the rollout;
        the surplus is dropped. Returns it with the rounds' counts."""
        config, q = self.config, self.config.rollout.questions_per_step
        kept_parts: list[ScoredRollout] = []
        rounds: list[Round] = []
        compute, verified, n_kept = Compute(), VerifyCounts(), 0
        while n_kept < q and len(rounds) < max_rounds:
            problems = next_round(rounds, q - n_kept)
            collected = self._collect(collect, problems, round_seed(config.run.seed, step, len(rounds)), step)
            rollout = collected.rollout
            compute, verified = compute + collected.compute, verified + collected.verified
            keep = kept_groups(rollout.correct, rollout.group_size, config.algo.negative_groups_signal).cpu()
            rounds.append(Round.of(rollout, keep))
            groups = torch.nonzero(keep).flatten()[: q - n_kept]
            if len(groups):
                kept_parts.append(select_groups(rollout, groups))
                n_kept += len(groups)
        if not kept_parts:  # nothing kept: the last round's groups, which give the update no signal
            kept_parts = [rollout]
        merged = merge_rollouts(kept_parts, self.pad_token_id)
        short = float(n_kept < q)
        metrics = {"selection/rounds": len(rounds), "selection/kept_groups": n_kept, "selection/short": short}
        return Selected(Collected(merged, verified, compute), metrics), rounds

    def select(self, step: int, take: Take, collect: Collect) -> Selected:
        raise NotImplementedError

    def state(self) -> dict:
        """What a checkpoint keeps so that a resumed run selects as an uninterrupted one would."""
        return {"history": self.history.to_json()}

    def load_state(self, state: dict) -> None:
        """Continue from `state` (a checkpoint's `state()`)."""
        self.history = PromptHistory.from_json(state["history"])


class UniformSelector(Selector):
    def select(self, step: int, take: Take, collect: Collect) -> Selected:
        ro = self.config.rollout
        collected = self._collect(collect, take(ro.questions_per_step), round_seed(self.config.run.seed, step, 0), step)
        return Selected(collected, {})


class DynamicSelector(Selector):
    """DAPO's dynamic sampling (`Selector._fill`), rounds of `round_prompts` prompts of the data order."""

    def select(self, step: int, take: Take, collect: Collect) -> Selected:
        options: DynamicSelection = self.config.rollout.selection
        per_round = options.round_prompts or self.config.rollout.questions_per_step
        selected, _ = self._fill(step, collect, lambda rounds, missing: take(per_round), options.max_rounds)
        return selected


def zero_variance_streak(visits: Sequence[tuple[int, int, int]]) -> tuple[int, str | None]:
    """A prompt's current streak of zero-variance visits (`PromptHistory` entries, oldest first): how many
    of the most recent visits in a row were all right ("easy") or all wrong ("hard"); (0, None) for a
    prompt whose last visit was mixed or that has none."""
    if not visits or 0 < visits[-1][2] < visits[-1][1]:
        return 0, None
    easy = visits[-1][2] == visits[-1][1]
    z = 0
    for _, samples, right in reversed(visits):
        if right != (samples if easy else 0):
            break
        z += 1
    return z, "easy" if easy else "hard"


def keep_probability(streak: int, p: float, floor: float) -> float:
    """GRESO's probability of keeping a prompt with `streak` zero-variance visits in a row: max(p^z, floor),
    1 for a streak of 0."""
    return 1.0 if streak == 0 else max(p**streak, floor)


def adapted(p: float, share: float, target: float, options: GresoSelection) -> float:
    """p after a step whose share of zero-variance groups (of p's kind) was `share`: one `p_step` down at
    or above `target` (more skipping), one up below it, within [`p_min`, `p_max`]."""
    return max(p - options.p_step, options.p_min) if share >= target else min(p + options.p_step, options.p_max)


def greso_round_size(options: GresoSelection, q: int, missing: int, last: Round | None) -> int:
    """Kept prompts in a step's next round: ceil(`first_round` Q) first; then the `missing` groups divided
    by the share of the last round's groups that had a signal, times `refill_margin` (rounded down),
    between ceil(`min_round` Q) and ceil(`first_round` Q); the most when the last round had none."""
    most, least = math.ceil(options.first_round * q), math.ceil(options.min_round * q)
    if last is None or last.signal == 0:
        return most
    return max(least, min(math.floor(missing * last.groups * options.refill_margin / last.signal), most))


@dataclass
class _Skips:
    skipped: int = 0
    seen: int = 0  # prompts considered that had been generated before


class GresoSelector(Selector):
    """GRESO: before each round, the prompts of the data order are skipped with probability 1 -
    `keep_probability` of their zero-variance streak until the round has its size (`greso_round_size`);
    skipped prompts use up their place in the order. The rounds fill the batch as dynamic sampling does
    (`Selector._fill`). p_easy and p_hard then move one `p_step` toward the target shares (`adapted`),
    from the first step that considered a prompt generated before."""

    def __init__(self, config: TrainConfig, pad_token_id: int) -> None:
        super().__init__(config, pad_token_id)
        self.options: GresoSelection = config.rollout.selection
        self.p_easy = self.p_hard = self.options.p_initial

    def _keeps(self, problem: Problem, coins: torch.Generator, skips: _Skips) -> bool:
        visits = self.history.visits.get(problem.id, [])
        skips.seen += bool(visits)
        streak, kind = zero_variance_streak(visits)
        if streak == 0:
            return True
        p = self.p_easy if kind == "easy" else self.p_hard
        keep = torch.rand((), generator=coins).item() < keep_probability(streak, p, self.options.min_keep)
        skips.skipped += not keep
        return keep

    def _survivors(self, size: int, take: Take, coins: torch.Generator, skips: _Skips) -> list[Problem]:
        kept: list[Problem] = []
        while len(kept) < size:  # each prompt is kept with probability at least min_keep > 0
            kept += [problem for problem in take(size - len(kept)) if self._keeps(problem, coins, skips)]
        return kept

    def select(self, step: int, take: Take, collect: Collect) -> Selected:
        options, q = self.options, self.config.rollout.questions_per_step
        coins = torch.Generator().manual_seed(skip_seed(self.config.run.seed, step))
        skips = _Skips()

        def next_round(rounds: Sequence[Round], missing: int) -> list[Problem]:
            size = greso_round_size(options, q, missing, rounds[-1] if rounds else None)
            return self._survivors(size, take, coins, skips)

        selected, rounds = self._fill(step, collect, next_round, options.max_rounds)
        groups = sum(r.groups for r in rounds)
        easy, hard = sum(r.all_right for r in rounds) / groups, sum(r.all_wrong for r in rounds) / groups
        metrics = {
            **selected.metrics,
            "selection/skipped": skips.skipped,
            "selection/p_easy": self.p_easy,
            "selection/p_hard": self.p_hard,
            "selection/all_right": easy,
            "selection/all_wrong": hard,
        }
        if skips.seen:
            alpha = options.target_zero_variance
            self.p_easy = adapted(self.p_easy, easy, alpha / 3, options)
            self.p_hard = adapted(self.p_hard, hard, 2 * alpha / 3, options)
        return Selected(selected.collected, metrics)

    def state(self) -> dict:
        return {**super().state(), "p_easy": self.p_easy, "p_hard": self.p_hard}

    def load_state(self, state: dict) -> None:
        super().load_state(state)  # a checkpoint of another selection kind has no p: they start afresh
        self.p_easy, self.p_hard = state.get("p_easy", self.p_easy), state.get("p_hard", self.p_hard)


class KnapsackSelector(Selector):
    """Knapsack RL: the next Q prompts, `rollout.group_size` x Q samples spread over them by
    `core.knapsack.allocate_samples` from each prompt's estimate (`estimate_success` of its history)."""

    def select(self, step: int, take: Take, collect: Collect) -> Selected:
        ro, options = self.config.rollout, self.config.rollout.selection
        g = ro.group_size
        problems = take(ro.questions_per_step)
        window, least = options.window or 2 * g, options.min_history or g
        estimates = [
            estimate_success([(n, right) for _, n, right in self.history.visits.get(p.id, [])], window, least)
            for p in problems
        ]
        samples = allocate_samples(
            estimates,
            budget=g * len(problems),
            default=g,
            min_samples=options.min_samples,
            max_samples=options.max_samples,
            alpha=options.alpha,
        )
        collected = self._collect(collect, problems, round_seed(self.config.run.seed, step, 0), step, samples)
        known = [p for p in estimates if p is not None]
        metrics = {
            "selection/unseen": sum(p is None for p in estimates),
            "selection/estimated_all_wrong": sum(p == 0 for p in known),
            "selection/estimated_all_right": sum(p == 1 for p in known),
            "selection/samples_min": min(samples),
            "selection/samples_max": max(samples),
        }
        return Selected(collected, metrics)


SELECTORS: dict[type, type[Selector]] = {
    UniformSelection: UniformSelector,
    DynamicSelection: DynamicSelector,
    GresoSelection: GresoSelector,
    KnapsackSelection: KnapsackSelector,
}


def selector(config: TrainConfig, pad_token_id: int, state: dict | None = None) -> Selector:
    """The selector of `config.rollout.selection`, continuing from a checkpoint's `Selector.state`."""
    chosen = SELECTORS[type(config.rollout.selection)](config, pad_token_id)
    if state:
        chosen.load_state(state)
    return chosen

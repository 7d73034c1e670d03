"""Evaluation: pass@k overall and per difficulty level from n samples per problem."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import RolloutConfig, TrainConfig
from lensrl.core.passk import pass_at_k
from lensrl.data.answers import extract_answer
from lensrl.policy.distributed import World, all_gather_objects
from lensrl.records import Problem, Rollout
from lensrl.rollout.collect import score
from lensrl.rollout.sample import sample
from lensrl.rollout.verifier import VerifierLike
from lensrl.seeds import eval_chunk_seed, eval_seed, first_chunk, problems_per_chunk


@dataclass
class EvalResult:
    """pass@k (k = 1, 2, 4, ... up to the sample count) overall and per level, one line of eval.jsonl."""

    step: int
    overall: dict[str, float]  # {"pass@1": ..., "pass@16": ...}
    per_level: dict[str, dict[str, float]]  # {"1": {"pass@1": ...}, ...}
    all_wrong: float  # share of problems with no correct sample (negative groups)
    all_wrong_per_level: dict[str, float]
    n_problems: int
    samples: int
    # share of samples with no \boxed{} or #### final answer (`data.answers.extract_answer`), whatever the
    # verifier: metrics.jsonl's per-step `no_final_answer`, not the verifier's own `verify/unparseable`
    # count (the field keeps its name, the key of eval.jsonl and of the committed records)
    unparseable: float | None = None
    response_tokens: float | None = None  # mean response length in tokens (EOS included)

    @classmethod
    def from_json(cls, record: dict) -> EvalResult:
        """The result of one eval.jsonl line (or a study record's evaluation), as `to_json` wrote it."""
        return cls(**record)

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def scopes(self) -> list[str]:
        """ "all" (every problem), then each level in the order evaluated."""
        return ["all", *self.per_level]

    def pass_at(self, scope: str, k: int) -> float:
        """pass@k over all problems (scope "all") or over one level's ("1", "2", ...)."""
        if scope not in self.scopes:
            known = ", ".join(self.scopes)
            raise ValueError(f"no scope {scope!r} in the evaluation of step {self.step}; known: {known}")
        by_k = self.overall if scope == "all" else self.per_level[scope]
        if f"pass@{k}" not in by_k:
            known = ", ".join(name.removeprefix("pass@") for name in by_k)
            raise ValueError(
                f"no pass@{k} in the evaluation of step {self.step} ({self.samples} samples); known k: {known}"
            )
        return by_k[f"pass@{k}"]


def ks_for(samples: int) -> list[int]:
    """1, 2, 4, ... up to `samples`."""
    ks, k = [], 1
    while k <= samples:
        ks.append(k)
        k *= 2
    return ks


def summarise(
    step: int,
    problems: Sequence[Problem],
    n_correct: Sequence[int],
    samples: int,
    n_unparseable: Sequence[int] | None = None,
    response_tokens: Sequence[int] | None = None,
) -> EvalResult:
    """Average the unbiased pass@k of each problem, overall and by level; per-problem counts of samples
    without a final answer and sums of response tokens, when given, become the overall share without
    one (`EvalResult.unparseable`) and the mean length."""
    ks = ks_for(samples)

    def mean_pass(idx: list[int]) -> dict[str, float]:
        return {f"pass@{k}": sum(pass_at_k(samples, n_correct[i], k) for i in idx) / len(idx) for k in ks}

    def all_wrong(idx: list[int]) -> float:
        return sum(n_correct[i] == 0 for i in idx) / len(idx)

    by_level = {
        str(lv): [i for i, p in enumerate(problems) if p.level == lv]
        for lv in sorted({p.level for p in problems if p.level is not None})
    }
    everything = list(range(len(problems)))
    return EvalResult(
        step=step,
        overall=mean_pass(everything),
        per_level={lv: mean_pass(idx) for lv, idx in by_level.items()},
        all_wrong=all_wrong(everything),
        all_wrong_per_level={lv: all_wrong(idx) for lv, idx in by_level.items()},
        n_problems=len(problems),
        samples=samples,
        unparseable=None if n_unparseable is None else sum(n_unparseable) / (len(problems) * samples),
        response_tokens=None if response_tokens is None else sum(response_tokens) / (len(problems) * samples),
    )


@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation samples: `samples` responses per problem with the rollout config's temperature,
    top-p, response length, generation batch size and sampler, seeded by `seed`."""

    rollout: RolloutConfig
    samples: int
    seed: int
    step: int = 0  # the training step the result is logged at
    progress: bool = False

    @classmethod
    def of_run(cls, config: TrainConfig, step: int, seed: int | None = None) -> EvalSettings:
        """A run's evaluation at training step `step`: `run.eval_samples` samples per problem, seeded by
        `seeds.eval_seed(run.seed, step)` (`seed` replaces it for measurements outside any run)."""
        seed = eval_seed(config.run.seed, step) if seed is None else seed
        return cls(config.rollout, config.run.eval_samples, seed, step, config.run.progress)


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    verifier: VerifierLike,
    settings: EvalSettings,
    world: World = World(),
    synced_gpus: bool = False,
    on_chunk: Callable[[Rollout, torch.Tensor], None] | None = None,
) -> EvalResult:
    """Sample `settings.samples` responses per problem and summarise pass@k.

    With several ranks each samples an equal share of the problems (the list is padded by repeating
    its first problems, whose extra counts are dropped) and the correct counts are gathered.
    `on_chunk` sees every chunk of samples with its (N,) verdicts (e.g. to measure their confidence).
    """
    if not problems:
        raise ValueError("evaluation needs at least one problem")
    samples, step = settings.samples, settings.step
    per_chunk = problems_per_chunk(settings.rollout.generation_batch_size, samples)
    per_rank = -(-len(problems) // world.size)
    padded = (list(problems) * world.size)[: per_rank * world.size]
    mine = padded[world.rank * per_rank : (world.rank + 1) * per_rank]
    first = first_chunk(world.rank, per_rank, per_chunk)
    counts: list[tuple[int, int, int]] = []  # per problem: correct, without a final answer, response tokens
    progress = settings.progress and world.is_main
    chunks = tqdm(range(0, len(mine), per_chunk), desc=f"eval step {step}", leave=False, disable=not progress)
    for i, start in enumerate(chunks):
        batch = mine[start : start + per_chunk]
        out = sample(
            model,
            tokenizer,
            batch,
            settings.rollout,
            eval_chunk_seed(settings.seed, first + i),
            group_size=samples,
            synced_gpus=synced_gpus,
        )
        correct = score(out, verifier)
        if on_chunk is not None:
            on_chunk(out, correct)
        no_answer = torch.tensor([extract_answer(c) is None for c in out.completions])
        per_problem = zip(
            correct.view(len(batch), samples).sum(dim=1).tolist(),
            no_answer.view(len(batch), samples).sum(dim=1).tolist(),
            out.lengths.view(len(batch), samples).sum(dim=1).tolist(),
        )
        counts.extend((int(c), int(u), int(n)) for c, u, n in per_problem)
    gathered = [c for part in all_gather_objects(world, counts) for c in part][: len(problems)]
    correct_counts, no_answer_counts, tokens = zip(*gathered)
    return summarise(step, problems, correct_counts, samples, no_answer_counts, tokens)


def format_table(results: dict[str, EvalResult]) -> str:
    """A plain-text pass@k table by level (in %), one block of rows per named result (e.g. before / after).

    The last column is the share of problems with no correct sample: the negative groups. A line per
    result below the table gives its share of samples without a final answer and mean response length,
    when measured.
    """
    first = next(iter(results.values()))
    ks = list(first.overall)
    header = f"{'':<8}{'level':<7}" + "".join(f"{k:>9}" for k in ks) + f"{'all-wrong':>11}"
    lines = [header, "-" * len(header)]
    for name, res in results.items():
        rows = [(lv, res.per_level[lv], res.all_wrong_per_level[lv]) for lv in res.per_level]
        for lv, vals, wrong in rows + [("all", res.overall, res.all_wrong)]:
            lines.append(f"{name:<8}{lv:<7}" + "".join(f"{100 * vals[k]:>9.1f}" for k in ks) + f"{100 * wrong:>11.1f}")
    for name, res in results.items():
        if res.unparseable is not None and res.response_tokens is not None:
            lines.append(
                f"{name}: {100 * res.unparseable:.1f}% of samples without a final answer, "
                f"{res.response_tokens:.1f} response tokens on average"
            )
    return "\n".join(lines)

"""The records passed between stages: a `Problem`, a sampled `Rollout`, and a `ScoredRollout`.

* `Problem`: what data sources give, prompts are made from, rollouts sample and evaluation scores.
* `Rollout`: the sampler's output, G responses to each of Q problems (N = Q x G rows, groups
  contiguous), as tokens and text; or n_q responses to problem q when groups differ in size
  (`group_size` then holds the Q sizes, N = their sum).
* `ScoredRollout`: a rollout with what the update needs, 0/1 correctness and the behaviour policy's
  log-probs and entropies (`lensrl.rollout.collect` makes one).
* `Compute`: what generating a rollout cost (prompts, samples, tokens), added up over a step and a run.

Layout of a rollout's token tensors (the response mask covers the generated tokens up to and
including the first EOS):

```text
input_ids = [left-padded prompt (P) | response (R), right-padded after its first EOS]
```
"""

from __future__ import annotations

import dataclasses
import itertools
import numbers
from dataclasses import dataclass
from typing import Self

import torch

from lensrl.core.advantages import pibar


@dataclass(frozen=True)
class Problem:
    """One question with its verifiable answer."""

    prompt: str  # the question text (prompt formatting is applied later)
    answer: str  # gold answer, compared by the verifier
    level: int | None = None  # difficulty 1..5 where known
    solution: str | None = None  # worked solution (supervised warm-start target)
    id: str = ""
    subject: str | None = None  # e.g. "Algebra" (MATH) where known


@dataclass(frozen=True)
class Rollout:
    """Q problems with G sampled responses each, or with n_q responses to problem q when groups differ in
    size. Group q's rows are contiguous and the groups are in the problems' order (`group_offsets`)."""

    problems: list[Problem]  # Q
    group_size: int | tuple[int, ...]  # G, or the Q group sizes (n_1, ..., n_Q) when they differ
    input_ids: torch.Tensor  # (N, P+R)
    prompt_mask: torch.Tensor  # (N, P) 1 on real prompt tokens
    response_mask: torch.Tensor  # (N, R) 1 on generated tokens up to the first EOS
    completions: list[str]  # N decoded responses
    truncated: torch.Tensor  # (N,) bool, no EOS within max_new_tokens
    # the compact sampler's own log-probs and entropies of the drawn tokens (rollout.behaviour_logprobs
    # = "sampler"), 0 past each response; None from any other sampler
    sampler_logprobs: torch.Tensor | None = None  # (N, R)
    sampler_entropy: torch.Tensor | None = None  # (N, R)

    def __post_init__(self) -> None:
        if isinstance(self.group_size, numbers.Integral):
            object.__setattr__(self, "group_size", int(self.group_size))
        else:  # the Q sizes; an int when they are all equal
            sizes = tuple(int(n) for n in self.group_size)
            if len(sizes) != len(self.problems):
                raise ValueError(f"{len(sizes)} group sizes for {len(self.problems)} problems")
            if sum(sizes) != self.input_ids.shape[0]:
                raise ValueError(f"group sizes summing to {sum(sizes)} for {self.input_ids.shape[0]} rows")
            object.__setattr__(self, "group_size", sizes[0] if len(set(sizes)) == 1 else sizes)

    @property
    def group_sizes(self) -> tuple[int, ...]:
        """The Q group sizes (each G when `group_size` is an int)."""
        return (self.group_size,) * len(self.problems) if isinstance(self.group_size, int) else self.group_size

    @property
    def group_offsets(self) -> tuple[int, ...]:
        """Q + 1 row offsets: group q's rows are group_offsets[q] to group_offsets[q + 1] - 1."""
        return (0, *itertools.accumulate(self.group_sizes))

    @property
    def prompt_len(self) -> int:
        return self.prompt_mask.shape[1]

    @property
    def lengths(self) -> torch.Tensor:  # (N,)
        return self.response_mask.sum(dim=1)

    def to(self, device: torch.device | str) -> Self:
        """This record with every tensor on `device`."""
        moved = {
            f.name: value.to(device)
            for f in dataclasses.fields(self)
            if isinstance(value := getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)


@dataclass(frozen=True, kw_only=True)
class ScoredRollout(Rollout):
    """A rollout with its verdicts and the behaviour policy's log-probs: everything the update needs."""

    correct: torch.Tensor  # (N,) float 0/1
    logprobs_old: torch.Tensor  # (N, R) behaviour policy at the sampling temperature, 0 past each response
    entropy: torch.Tensor  # (N, R) behaviour-policy token entropies

    @classmethod
    def of(
        cls, rollout: Rollout, correct: torch.Tensor, logprobs_old: torch.Tensor, entropy: torch.Tensor
    ) -> ScoredRollout:
        """`rollout` scored: its verdicts (N,) and behaviour log-probs and entropies (N, R)."""
        fields = {f.name: getattr(rollout, f.name) for f in dataclasses.fields(Rollout)}
        return cls(**fields, correct=correct, logprobs_old=logprobs_old, entropy=entropy)

    @property
    def seq_logprobs(self) -> torch.Tensor:  # (N,)
        return (self.logprobs_old * self.response_mask).sum(dim=1)

    @property
    def pibar(self) -> torch.Tensor:  # (N,) float64
        """The behaviour policy's length-normalised confidence in each response (`core.advantages.pibar`)."""
        return pibar(self.seq_logprobs, self.lengths)


@dataclass(frozen=True)
class Compute:
    """What generation cost: prompts drawn, samples generated, generated tokens, and the samples that
    reached the update. A step's or a run's; `a + b` adds two, so rounds of generation within a step
    and steps within a run add up.

    `Compute.of(rollout)` counts what a rollout holds, whatever the update later does with it
    (`samples_updated` 0: the trainer fills it in from the update); tokens are the generated response
    tokens as the response mask counts them (up to and including the first EOS)."""

    prompts: int = 0
    samples: int = 0
    tokens: int = 0
    samples_updated: int = 0  # responses in the groups the update used (after `algo.filter_groups`)

    @classmethod
    def of(cls, rollout: Rollout) -> Compute:
        """What sampling `rollout` cost: its prompts, responses and response tokens."""
        return cls(len(rollout.problems), rollout.response_mask.shape[0], int(rollout.response_mask.sum().item()))

    def __add__(self, other: Compute) -> Compute:
        if not isinstance(other, Compute):
            return NotImplemented
        return Compute(*(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)))

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, int]) -> Compute:
        return cls(**record)

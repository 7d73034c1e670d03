"""The policy and the problems a command works on, made ready together: train, sft, eval and grad-diff.

    load     the problems (`data.sources.load_problems`), by the caller, before anything slow: a data
             error is reported before the model loads (and before a run folder is taken)
    policy   `load_policy` from the given weights (a checkpoint, a model folder) or `config.model`
    format   every prompt as the policy is conditioned on it (`data.prompts.format_problems`)
    check    every prompt fits the rollout's limit (`data.prompts.check_prompt_lengths`), where asked
    order    the seeded order of the training problems (`seeds.DataOrder`, seeded by `run.seed`)

The callers differ only in what they hand in: the problems they use (eval: the evaluation set
only; grad-diff: the training set only; sft: training problems with a worked solution), the weights,
the device (this rank's under torchrun) and whether prompt lengths are checked (by the RL commands).
A caller that seeds torch's global generator (train, sft: any random initialisation, such as LoRA's)
does it before calling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import TrainConfig
from lensrl.data.prompts import check_prompt_lengths, format_problems
from lensrl.policy.models import load_policy
from lensrl.records import Problem
from lensrl.seeds import DataOrder


@dataclass
class Prepared:
    """A loaded policy and the problems formatted for it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    train_set: list[Problem]  # formatted (and checked, where asked); [] when none were handed in
    eval_set: list[Problem]
    order: DataOrder  # over train_set


def prepare(
    config: TrainConfig,
    train_problems: Sequence[Problem] = (),
    eval_problems: Sequence[Problem] = (),
    weights: str | Path | None = None,
    device: str | None = None,
    check_lengths: bool = True,
) -> Prepared:
    """Load the policy (`weights`, else `config.model`; on `device`, else `config.model.device`), format
    both sets of problems for it, check their prompt lengths (`check_lengths`; `data.skip_bad_rows`
    skips the long ones) and order the training set."""
    model_config = config.model if device is None else config.model.model_copy(update={"device": device})
    model, tokenizer = load_policy(model_config, weights)
    train_set, eval_set = (format_problems(ps, tokenizer, config.prompt) for ps in (train_problems, eval_problems))
    if check_lengths:
        train_set, eval_set = (
            check_prompt_lengths(ps, tokenizer, model.config, config.rollout, config.data.skip_bad_rows)
            for ps in (train_set, eval_set)
        )
    return Prepared(model, tokenizer, train_set, eval_set, DataOrder(len(train_set), config.run.seed))

"""Prompt formatting: the question goes into the chat template (instruct models) or a plain template (base models).

Loaders return the raw question in `Problem.prompt`; `format_problems` turns it into exactly the
text the policy is conditioned on, so sampling, scoring and the supervised warm-start agree.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from lensrl.config import PromptConfig, RolloutConfig
from lensrl.records import Problem


def resolve_style(tokenizer: PreTrainedTokenizerBase, config: PromptConfig) -> str:
    """ "chat" or "plain"; "auto" picks chat when the tokenizer has a chat template."""
    if config.style == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if config.style == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt.style=chat but the tokenizer has no chat template; use prompt.style=plain")
    return config.style


def format_prompt(tokenizer: PreTrainedTokenizerBase, question: str, config: PromptConfig) -> str:
    """The conditioning text for one question (tokenised later without adding special tokens)."""
    text = config.template.replace("{prompt}", question)
    if resolve_style(tokenizer, config) == "chat":
        messages = [{"role": "system", "content": config.system}] if config.system is not None else []
        messages.append({"role": "user", "content": text})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    adds_bos = bos is not None and tokenizer("x").input_ids[:1] == [tokenizer.bos_token_id]
    return bos + text if adds_bos else text  # keep the BOS a base model was trained with


def format_problems(
    problems: Sequence[Problem], tokenizer: PreTrainedTokenizerBase, config: PromptConfig
) -> list[Problem]:
    return [dataclasses.replace(p, prompt=format_prompt(tokenizer, p.prompt, config)) for p in problems]


def prompt_token_limit(model_config: PretrainedConfig, rollout: RolloutConfig) -> int | None:
    """`rollout.max_prompt_tokens`, capped by what the model's context leaves after a full response."""
    context = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    room = context - rollout.max_new_tokens if context else None
    if room is not None and room < 1:
        raise ValueError(
            f"rollout.max_new_tokens={rollout.max_new_tokens} leaves no room for a prompt in the "
            f"model's context of {context} tokens"
        )
    limits = [x for x in (rollout.max_prompt_tokens, room) if x is not None]
    return min(limits) if limits else None


def check_prompt_lengths(
    problems: Sequence[Problem],
    tokenizer: PreTrainedTokenizerBase,
    model_config: PretrainedConfig,
    rollout: RolloutConfig,
    skip: bool = False,
) -> list[Problem]:
    """The formatted problems, after checking every prompt fits `prompt_token_limit`.

    A longer prompt raises ValueError naming the problem, or with `skip` is left out, with one
    warning that counts them.
    """
    limit = prompt_token_limit(model_config, rollout)
    if limit is None or not problems:
        return list(problems)
    lengths = [len(ids) for ids in tokenizer([p.prompt for p in problems], add_special_tokens=False)["input_ids"]]
    too_long = [(p, n) for p, n in zip(problems, lengths) if n > limit]
    if not too_long:
        return list(problems)
    first, n = too_long[0]
    where = (
        f"problem {first.id!r} has a prompt of {n} tokens, over the limit of {limit} (rollout.max_prompt_tokens, "
        f"or the model's context minus rollout.max_new_tokens)"
    )
    if not skip:
        raise ValueError(
            f"{where}; {len(too_long)} prompt(s) are too long: shorten them, raise the limit, or skip "
            "them with data.skip_bad_rows=true"
        )
    warnings.warn(
        f"skipped {len(too_long)} problem(s) with prompts over {limit} tokens; the first: {where}", stacklevel=2
    )
    kept = [p for p, n in zip(problems, lengths) if n <= limit]
    if not kept:
        raise ValueError(f"every prompt is over the limit of {limit} tokens; {where}")
    return kept

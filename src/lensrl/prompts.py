"""Prompt formatting: the question goes into the chat template (instruct models) or a plain template (base models).

Loaders return the raw question in `Problem.prompt`; `format_problems` turns it into exactly the
text the policy is conditioned on, so sampling, scoring and the supervised warm-start agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lensrl.config import PromptConfig
from lensrl.data import Problem


def resolve_style(tokenizer: PreTrainedTokenizerBase, config: PromptConfig) -> str:
    """"chat" or "plain"; "auto" picks chat when the tokenizer has a chat template."""
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

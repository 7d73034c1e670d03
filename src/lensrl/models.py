"""Loading a policy and its tokenizer through the Hugging Face Auto classes."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import ModelConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_model_path(name_or_path: str) -> str:
    """"testbed" names the built-in base policy; anything else is a hub id or a folder."""
    if name_or_path == "testbed":
        from lensrl.testbed import base_policy_path

        return str(base_policy_path())
    return name_or_path


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Tokenizer with left padding (prompts are left-padded for batched sampling) and a pad token."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer of {name_or_path!r} has no EOS token; responses could never end")
    if tokenizer.pad_token_id is None:
        warnings.warn(f"tokenizer of {name_or_path!r} has no pad token; using its EOS token for padding")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_policy(config: ModelConfig, path: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (on its device, in its dtype) and tokenizer; `path` overrides `config.name_or_path`."""
    name = str(path) if path is not None else config.name_or_path
    tokenizer = load_tokenizer(name)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=_DTYPES[config.dtype])
    model.to(resolve_device(config.device))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer

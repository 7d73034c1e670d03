"""Shared fixtures: a tiny random Llama saved in Hugging Face format, loaded back through the Auto classes."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lensrl.testbed import build_tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_overrides(model_dir, out_dir, *extra):
    """A run that takes a few seconds on a CPU: 2 steps of 4 questions x 4 samples."""
    return [
        f"model.name_or_path={model_dir}", f"run.output_dir={out_dir}", "run.steps=2", "run.progress=false",
        "rollout.questions_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=12",
        "optim.updates_per_rollout=2", "optim.lr=1e-3", "optim.micro_batch_size=4",
        "data.train_size=64", "data.eval_per_level=2", "run.eval_samples=2", *extra,
    ]

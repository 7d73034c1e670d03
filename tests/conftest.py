"""Shared fixtures: a tiny random Llama saved in Hugging Face format, loaded back through the Auto classes."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lensrl.testbed import build_tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_overrides(model_dir, out_dir, *extra):
    """A run that takes a few seconds on a CPU: 2 steps of 4 questions x 4 samples."""
    return [
        f"model.name_or_path={model_dir}",
        f"run.output_dir={out_dir}",
        "run.steps=2",
        "run.progress=false",
        "rollout.questions_per_step=4",
        "rollout.group_size=4",
        "rollout.max_new_tokens=12",
        "optim.updates_per_rollout=2",
        "optim.lr=1e-3",
        "optim.micro_batch_size=4",
        "data.train={path: testbed, size: 64}",
        "data.eval={path: testbed, per_level: 2}",
        "run.eval_samples=2",
        *extra,
    ]


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory):
    """A tiny random Qwen2 with a BPE tokenizer trained in-process and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = ["What is 2+3? The answer is \\boxed{5}.", "Compute 12-7 step by step: 12-7=5 so \\boxed{5}"] * 20
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    tokenizer.backend_tokenizer.decoder = decoders.ByteLevel()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_qwen2_chat")
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def nan_behaviour_logprobs_at(monkeypatch, call: int) -> None:
    """Make the trainer's `call`-th behaviour log-prob pass (1-based) return NaN log-probs."""
    from lensrl.rollout import collect

    behaviour_logprobs, calls = collect.behaviour_logprobs, [0]

    def faulty(*args, **kwargs):
        calls[0] += 1
        logprobs, entropy = behaviour_logprobs(*args, **kwargs)
        return (logprobs * float("nan") if calls[0] == call else logprobs), entropy

    monkeypatch.setattr(collect, "behaviour_logprobs", faulty)

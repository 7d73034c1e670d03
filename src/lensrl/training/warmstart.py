"""Supervised warm-start of a testbed's base policy: a ~1M-parameter Llama trained from scratch.

The policy sees `prompt + solution + <eos>`, the solution being the testbed teacher's (its
`demonstration`: the right one on carry; on signs a practice problem or one with dropped signs), and is
trained with cross-entropy on the solution and EOS tokens only (the prompt is context, never a target).
AdamW with linear warm-up then cosine decay to zero, fp32, for a FIXED number of steps: the checkpoint
must not depend on machine speed, and it is deliberately under-trained so that RL has room to improve it
(level 1 mostly right, level 5 mostly wrong but sometimes right; see `lensrl.evaluation.profile`).

`lensrl testbed-build --output-dir DIR [--testbed signs] [--steps N ...]` rebuilds one: every field
of `WarmStartConfig` is a flag, and the testbed's committed warm-start gives the defaults.

Determinism: the only randomness is the weight init (`torch.manual_seed(seed)` inside a forked RNG, so
the caller's global state is untouched), the problem stream (`random.Random(seed)`) and the teacher's
choices (`random.Random(seed + 1)`); there is no dropout. Training runs on `num_threads` CPU threads,
fixed so that float reductions, and hence the weights, do not change with the machine's core count.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
import transformers
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lensrl.testbed import TESTBEDS, task, warmstart_record
from lensrl.testbed.tokenizer import build_tokenizer
from lensrl.training.sft import cosine_with_warmup, sft_step


class WarmStartConfig(BaseModel):
    """Everything that determines a warm-started base policy; the defaults build the carry testbed's committed one
    (`committed_config` reads any testbed's from its warmstart.json)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    testbed: str = "carry"
    """Which testbed's problems and teacher (`lensrl.testbed.TESTBEDS`)."""
    steps: int = Field(700, ge=1)
    """Optimizer steps (a fixed count, never a time budget)."""
    batch_size: int = Field(64, ge=1)
    """Sequences per step; levels cycle evenly inside every batch."""
    micro_batch_size: int = Field(16, ge=1)
    """Sequences per forward pass (length-sorted, to spend little compute on padding)."""
    lr: float = Field(2e-3, gt=0)
    """Peak AdamW learning rate."""
    warmup_steps: int = Field(50, ge=0)
    """Steps of linear warm-up before the cosine decay to zero."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW decoupled weight decay."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient-norm clipping threshold."""
    seed: int = 0
    """Seed of the weight init and of the training problems."""
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    """Difficulty levels of the training problems, cycled evenly."""
    hidden_size: int = Field(128, ge=8)
    """Width of the residual stream."""
    intermediate_size: int = Field(512, ge=8)
    """Width of the SwiGLU MLP."""
    num_layers: int = Field(4, ge=1)
    """Transformer blocks."""
    num_heads: int = Field(4, ge=1)
    """Attention heads (no grouped-query sharing)."""
    tie_word_embeddings: bool = True
    """Share the input embedding and the output projection."""
    max_position_embeddings: int = Field(256, ge=128)
    """Longest sequence the model is configured for (prompt + completion)."""
    num_threads: int = Field(2, ge=1)
    """CPU threads while training; fixed so the weights do not depend on the machine's core count."""

    @model_validator(mode="after")
    def _known_levels(self) -> WarmStartConfig:
        if self.testbed not in TESTBEDS:
            raise ValueError(f"testbed must be one of {', '.join(TESTBEDS)}, got {self.testbed!r}")
        known = task(self.testbed).LEVELS
        if not self.levels or any(level not in known for level in self.levels):
            raise ValueError(f"levels must be a non-empty selection of {known}, got {self.levels}")
        return self


def committed_config(testbed: str) -> WarmStartConfig:
    """The warm-start that built testbed `testbed`'s committed base policy (its warmstart.json)."""
    return WarmStartConfig(**warmstart_record(testbed)["config"])


def build_model(config: WarmStartConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A freshly initialised fp32 Llama sized by `config`, seeded by `config.seed`."""
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = LlamaForCausalLM(model_config)
    return model.float()


def train_policy(
    config: WarmStartConfig, tokenizer: PreTrainedTokenizerFast, progress: bool = True
) -> tuple[LlamaForCausalLM, float]:
    """Train a fresh policy on `config.steps` batches of testbed problems; returns it and its last loss.

    The loss of a step is the mean over all solution tokens of its batch. The batch is sorted by
    length and cut into micro-batches, so short level-1 rows are not padded to level-5 length.
    """
    generator = task(config.testbed)
    teacher = random.Random(config.seed + 1)  # the teacher's choices; the carry teacher makes none
    problems = [
        generator.demonstration(p, teacher)
        for p in generator.generate_problems(config.steps * config.batch_size, config.levels, seed=config.seed)
    ]
    model = build_model(config, tokenizer)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, config.warmup_steps, config.steps)
    )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.num_threads)
    loss_value = float("nan")
    try:
        bar = tqdm(range(config.steps), desc="warm-start", disable=not progress)
        for step in bar:
            batch = problems[step * config.batch_size : (step + 1) * config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            # default positions: the committed policy was built that way, and rebuilds must be bit-identical
            loss_value = sft_step(model, batch, tokenizer, config.micro_batch_size, pad_aware_positions=False)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            schedule.step()
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{schedule.get_last_lr()[0]:.2e}", refresh=False)
    finally:
        torch.set_num_threads(previous_threads)
    model.eval()
    return model, loss_value


def rebuild_command(output_dir: str | Path, config: WarmStartConfig) -> str:
    """The `lensrl testbed-build` command that rebuilds a policy with `config`: only the fields that differ
    from the testbed's committed warm-start are spelled out (`warmstart_flags` names them)."""
    parts = ["lensrl testbed-build", f"--output-dir {output_dir}"]
    if config.testbed != "carry":
        parts.append(f"--testbed {config.testbed}")
    committed = committed_config(config.testbed)
    for name in WarmStartConfig.model_fields:
        value = getattr(config, name)
        if name == "testbed" or value == getattr(committed, name):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, tuple):
            parts.append(flag + " " + " ".join(str(v) for v in value))
        else:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def build_base_policy(output_dir: str | Path, config: WarmStartConfig | None = None, progress: bool = True) -> Path:
    """Train the base policy and save model, tokenizer and `warmstart.json` into `output_dir`."""
    config = config or WarmStartConfig()
    output_dir = Path(output_dir)
    tokenizer = build_tokenizer()
    started = time.perf_counter()
    model, final_loss = train_policy(config, tokenizer, progress=progress)
    seconds = time.perf_counter() - started
    output_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(output_dir)  # model.safetensors + config.json + generation_config.json
    tokenizer.save_pretrained(output_dir)
    record = {
        "config": config.model_dump(mode="json"),
        "command": rebuild_command(output_dir, config),
        "final_loss": final_loss,
        "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    (output_dir / "warmstart.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return output_dir

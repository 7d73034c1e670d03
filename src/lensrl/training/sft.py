"""Supervised warm-start (`lensrl sft`): teach a policy the answer format on worked solutions.

Small models often cannot follow the `\\boxed{}` format on their own, and RL from a policy that never
produces a verifiable answer has no signal. The policy sees `prompt + solution + EOS` (the prompt
formatted exactly as in RL) and is trained with cross-entropy on the solution and EOS tokens only.
AdamW with linear warm-up then cosine decay to zero, for a fixed number of steps. The run folder gets
config.yaml, metrics.jsonl, eval.jsonl (pass@k before and after), summary.json and checkpoints/; the
final checkpoint is an ordinary Hugging Face folder that `model.name_or_path` can point at.

Reliability as in `train` (`lensrl.runs.lifecycle`): a checkpoint every `run.save_every` steps holds
the weights (a LoRA run: the adapter), optimizer, scheduler, data position and random states, so
`sft(config, resume=True)` (`lensrl sft --resume`) goes on from the newest one and ends exactly where
an uninterrupted run would; SIGINT / SIGTERM finish the current step, save and return (`stopped_by`).
A resumed warm-start keeps its `sft.steps`: the learning-rate schedule depends on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import TrainConfig
from lensrl.data.sources import load_problems
from lensrl.evaluation.evaluate import EvalResult, EvalSettings
from lensrl.policy.models import autocast
from lensrl.policy.prepare import prepare
from lensrl.records import Problem
from lensrl.runs.checkpoint import load_trainer_state, save_checkpoint
from lensrl.runs.lifecycle import GracefulStop, RunResult, checkpoint_step, evaluate_and_log, open_run

IGNORE_INDEX = -100  # label of tokens that carry no loss (prompt and padding)


def encode_batch(
    problems: list[Problem], tokenizer: PreTrainedTokenizerBase, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded `prompt + solution + EOS` ids, attention mask and labels (solution and EOS only).

    Rows longer than `max_length` lose the end of their solution. Returns three (B, T) tensors:
    input_ids, attention_mask, labels.
    """
    rows: list[tuple[list[int], list[int]]] = []
    for problem in problems:
        if problem.solution is None:
            raise ValueError(f"problem {problem.id!r} has no solution to train on")
        prompt = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
        target = tokenizer(problem.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if max_length is not None:
            if len(prompt) >= max_length:
                raise ValueError(
                    f"problem {problem.id!r}: prompt of {len(prompt)} tokens exceeds max_length={max_length}"
                )
            target = target[: max_length - len(prompt)]
        rows.append((prompt, target))
    width = max(len(prompt) + len(target) for prompt, target in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    for i, (prompt, target) in enumerate(rows):
        start = width - len(prompt) - len(target)
        input_ids[i, start:] = torch.tensor(prompt + target)
        attention_mask[i, start:] = 1
        labels[i, width - len(target) :] = torch.tensor(target)
    return input_ids, attention_mask, labels


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: linear 0 -> 1 over the warm-up, then cosine 1 -> 0.

    transformers' `get_cosine_schedule_with_warmup` with its warm-up one step ahead ((step + 1) / warmup
    rather than step / warmup, so the first step does not waste its batch at lr 0): kept because the
    committed warm starts (the testbeds' base policies, the SmolLM2 adapters) were trained with it. The
    RL trainer's constant schedule is transformers' own (`optim.warmup_steps`)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def solution_loss_sum(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    pad_aware_positions: bool = True,
) -> torch.Tensor:
    """Summed next-token cross-entropy over the labelled (solution and EOS) tokens of a (B, T) batch.

    Positions count from each row's first real token, as in sampling (`pad_aware_positions=False`
    keeps the model's default positions; with rotary embeddings only rounding differs).
    """
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0) if pad_aware_positions else None
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits[:, :-1]
    targets = labels[:, 1:]  # (B, T-1): token t is predicted from the prefix ending at t-1
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def sft_step(
    model: PreTrainedModel,
    batch: list[Problem],
    tokenizer: PreTrainedTokenizerBase,
    micro_batch_size: int,
    max_length: int | None = None,
    amp: Callable[[], AbstractContextManager] = nullcontext,
    pad_aware_positions: bool = True,
) -> float:
    """Accumulate the gradient of the mean solution-token loss of `batch`; returns that loss.

    The batch is sorted by length and cut into micro-batches, so short rows are not padded to long ones.
    """
    batch = sorted(batch, key=lambda p: len(p.prompt) + len(p.solution or ""))
    micro_batches = [
        encode_batch(batch[i : i + micro_batch_size], tokenizer, max_length)
        for i in range(0, len(batch), micro_batch_size)
    ]
    device = model.device
    num_targets = sum(int((labels[:, 1:] != IGNORE_INDEX).sum()) for _, _, labels in micro_batches)
    total = 0.0
    for input_ids, attention_mask, labels in micro_batches:
        with amp():
            loss = (
                solution_loss_sum(
                    model, input_ids.to(device), attention_mask.to(device), labels.to(device), pad_aware_positions
                )
                / num_targets
            )
        loss.backward()
        total += loss.item()
    return total


def sft(config: TrainConfig, resume: bool = False) -> RunResult:
    """Warm-start `config.model` on the worked solutions of `config.data.train`; evaluates before and after.

    `resume=True` goes on from the newest complete checkpoint in `run.output_dir` (see
    `lifecycle.resume_checkpoint`). Data errors are reported before the model is loaded.
    """
    run, cfg = config.run, config.sft
    train_problems, eval_problems = load_problems(config.data, run.seed)
    if not any(p.solution for p in train_problems):
        raise ValueError("no training problem has a worked solution; sft needs a `solution` field")
    with GracefulStop() as stop, open_run(config, "sft", resume=resume, steps_key="sft.steps") as (folder, checkpoint):
        torch.manual_seed(run.seed)
        # rows are bounded by sft.max_length, not by the rollout's prompt limit
        prepared = prepare(
            config, [p for p in train_problems if p.solution], eval_problems, weights=checkpoint, check_lengths=False
        )
        model, tokenizer, train_set, order = prepared.model, prepared.tokenizer, prepared.train_set, prepared.order
        eval_set = prepared.eval_set
        amp = autocast(config.model, model.device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=config.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: cosine_with_warmup(s, cfg.warmup_steps, cfg.steps)
        )
        if checkpoint:  # and the random states, as they were after the checkpoint's step
            order.position = load_trainer_state(checkpoint, optimizer, scheduler)["data_position"]

        def save(step: int) -> Path:
            return save_checkpoint(
                folder.path,
                step,
                model,
                tokenizer,
                optimizer,
                scheduler,
                {"data_position": order.position},
                run.keep_checkpoints,
            )

        def evaluate_at(step: int) -> EvalResult:
            settings = EvalSettings.of_run(config, step)
            return evaluate_and_log(model, tokenizer, eval_set, settings, config.model, folder)

        start = checkpoint_step(checkpoint)
        if checkpoint:  # the evaluation before training is in the log already
            evals = folder.evals()
            first, last = evals[0], evals[-1]
        else:
            first = last = evaluate_at(0)
        model.train()
        bar = tqdm(
            range(start + 1, cfg.steps + 1), desc="sft", disable=not run.progress, initial=start, total=cfg.steps
        )
        for step in bar:
            t0 = time.perf_counter()
            batch = [train_set[i] for i in order.take(cfg.batch_size)]
            optimizer.zero_grad(set_to_none=True)
            loss = sft_step(model, batch, tokenizer, cfg.micro_batch_size, cfg.max_length, amp)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            record = {
                "step": step,
                "loss": loss,
                "grad_norm": grad_norm.item(),
                "lr": scheduler.get_last_lr()[0],
                "time/step": time.perf_counter() - t0,
            }
            folder.log_metrics(record)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
            if step == cfg.steps:
                break
            if stop.requested or (run.save_every and step % run.save_every == 0):
                save(step)
            if stop.requested:
                return RunResult(folder.path, first, last, stopped_by=stop.requested)
        model.eval()
        if checkpoint is None or start < cfg.steps:
            if cfg.steps > 0:
                last = evaluate_at(cfg.steps)
            final = save(cfg.steps)
        else:  # resumed from the final checkpoint of a run stopped before its summary
            final = checkpoint
        folder.write_summary(first, last, steps=cfg.steps, algorithm="sft", seed=run.seed, model=str(final))
        return RunResult(folder.path, first, last)

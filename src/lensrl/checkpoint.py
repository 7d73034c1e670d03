"""Checkpoints: model and tokenizer in Hugging Face format plus the optimizer state, written atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.distributed import World, barrier, full_state_dict, is_sharded


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data_position: int,
    keep: int,
    world: World = World(),
) -> Path:
    """Write `checkpoints/step_XXXXXX/` via a temporary folder and a rename, then keep the newest `keep`.

    Rank 0 writes the model (a sharded model's full weights are gathered to it first); with a sharded
    model every rank also writes its own shard of the optimizer state (`optimizer_rank{r}.pt`).
    """
    root = run_dir / "checkpoints"
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(world)
    sharded = is_sharded(model)
    weights = full_state_dict(model) if sharded else None  # a collective: every rank takes part
    if world.is_main:
        model.save_pretrained(tmp, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        torch.save(
            {"step": step, "optimizer": None if sharded else optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "data_position": data_position, "world_size": world.size},
            tmp / "trainer_state.pt",
        )
    if sharded:
        torch.save(optimizer.state_dict(), tmp / f"optimizer_rank{world.rank}.pt")
    barrier(world)
    if world.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old)
    barrier(world)
    return final

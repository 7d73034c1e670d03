"""Checkpoints: everything a run needs to go on exactly where it was, written atomically.

`checkpoints/step_XXXXXX/` holds the model and tokenizer in Hugging Face format (a LoRA run: the
adapter), `trainer_state.pt` (optimizer, scheduler, data position, the update sampler's generator),
`rng_rank{r}.pt` (Python, NumPy, torch and CUDA random states of each rank) and, written last,
`manifest.json` listing every file with its size. The folder is built under a temporary name and
renamed, so a kill at any moment leaves either the whole new checkpoint or none of it, and the older
ones are deleted only after that. `latest_checkpoint` picks the newest folder whose manifest matches
its files.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.policy.distributed import World, barrier, full_state_dict, is_sharded

MANIFEST = "manifest.json"


def rng_states() -> dict[str, Any]:
    """Every global random state this process draws from."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
    keep: int,
    world: World = World(),
) -> Path:
    """Write `checkpoints/step_XXXXXX/` via a temporary folder and a rename, then keep the newest `keep`.

    `state` is the trainer's own resumable state (data position, generator state). Rank 0 writes the
    model (a sharded model's full weights are gathered to it first); every rank writes its random
    states, and with a sharded model its own shard of the optimizer state (`optimizer_rank{r}.pt`).
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
            {
                "step": step,
                "optimizer": None if sharded else optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "world_size": world.size,
                **state,
            },
            tmp / "trainer_state.pt",
        )
    if sharded:
        torch.save(optimizer.state_dict(), tmp / f"optimizer_rank{world.rank}.pt")
    torch.save(rng_states(), tmp / f"rng_rank{world.rank}.pt")
    barrier(world)
    if world.is_main:
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "world_size": world.size, "files": files}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old)
        for stale in root.glob(".tmp_step_*"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
    barrier(world)
    return final


def is_complete(checkpoint: Path) -> bool:
    """The manifest exists and every file it lists is there with its size."""
    try:
        manifest = json.loads((checkpoint / MANIFEST).read_text())
        return all((checkpoint / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder; incomplete ones are skipped with a warning."""
    for checkpoint in sorted((run_dir / "checkpoints").glob("step_*"), reverse=True):
        if is_complete(checkpoint):
            return checkpoint
        warnings.warn(
            f"{checkpoint}: incomplete checkpoint (files missing or cut short); trying an older one", stacklevel=2
        )
    return None


def load_trainer_state(
    checkpoint: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    world: World = World(),
) -> dict[str, Any]:
    """Restore optimizer, scheduler and this rank's random states; returns the trainer state dict
    (`step` and whatever the trainer saved). The model weights are loaded with the policy."""
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    if state["world_size"] != world.size:
        raise ValueError(
            f"{checkpoint} was written by {state['world_size']} process(es); resume it with as many "
            f"(this run has {world.size})"
        )
    if state["optimizer"] is None:  # sharded: each rank has its own part
        optimizer.load_state_dict(torch.load(checkpoint / f"optimizer_rank{world.rank}.pt", weights_only=False))
    else:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_states(torch.load(checkpoint / f"rng_rank{world.rank}.pt", weights_only=False))
    return state

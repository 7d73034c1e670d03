"""Data-parallel (DDP) and sharded (FSDP2) training with torch.distributed.

Launch with `torchrun --nproc_per_node N -m lensrl.cli train ...` or `accelerate launch`; a single
process needs nothing. How a step is split (the trainer reads top to bottom with these calls):

* every rank takes the same Q questions; rank r samples, scores and takes behaviour log-probs for
  its contiguous share of whole groups (advantages need the whole group);
* `gather_rollout` gives every rank the whole rollout, so advantages, minibatches and rollout
  metrics are exactly those of one process;
* each minibatch of whole groups is split evenly over the ranks; every rank's loss is scaled by the
  world size and gradients are averaged (DDP: one all-reduce per optimizer step; FSDP2: its own
  reduce-scatter), which gives the gradient of the whole minibatch;
* evaluation problems are split over the ranks and the correct counts gathered;
* rank 0 alone writes files; checkpoints of a sharded model are gathered to rank 0 first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FSDPModule, fully_shard


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (a single process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous share of `n` items (`n` divisible by the world size)."""
        per = n // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


def init_world(device: str) -> World:
    """Join the process group when launched by torchrun / accelerate (WORLD_SIZE > 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def device_for(world: World, device: str) -> str:
    """Under torchrun, "auto" / "cuda" mean this rank's own GPU."""
    if world.distributed and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


def all_gather_objects(world: World, obj: Any) -> list[Any]:
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(world: World, values: dict[str, float]) -> dict[str, float]:
    """Sum scalar metrics over ranks."""
    if not world.distributed:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def average_gradients(world: World, params: list[torch.nn.Parameter]) -> None:
    """DDP's gradient averaging, done once per optimizer step over one flat buffer."""
    if not world.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: shard every transformer block (the model's `_no_split_modules`), then the rest."""
    block_names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in block_names]
    if not blocks:
        raise ValueError(f"{type(model).__name__} names no transformer block class (_no_split_modules) to shard")
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU (a collective for a sharded model: every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()

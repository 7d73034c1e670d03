"""One rollout from several: the chunks a sampler makes, or the shares of data-parallel ranks."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

import torch

from lensrl.policy.distributed import World, all_gather_objects
from lensrl.records import Rollout

R = TypeVar("R", bound=Rollout)


def _pad(t: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    extra = width - t.shape[1]
    return torch.nn.functional.pad(t, (extra, 0) if left else (0, extra), value=value)


def merge_rollouts(parts: Sequence[R], pad_token_id: int) -> R:
    """One rollout from several of the same type (a `Rollout` or a `ScoredRollout`), in order.

    Prompts are re-padded on the left and responses on the right to the widest part; padding has mask 0
    (and log-prob 0). Per-row and per-token values the parts do not all have are None. The groups are
    the parts' in order (sizes that differ, between the parts or within one, make a tuple of sizes).
    """
    if len(parts) == 1:
        return parts[0]
    p = max(r.prompt_len for r in parts)
    w = max(r.response_mask.shape[1] for r in parts)

    def rows(name: str) -> torch.Tensor | None:  # (n,) per-row values, or (n, R) per-token ones
        values = [getattr(r, name) for r in parts]
        if any(v is None for v in values):
            return None
        return torch.cat([v if v.dim() == 1 else _pad(v, w, 0.0, left=False) for v in values])

    merged = {
        f.name: rows(f.name)
        for f in dataclasses.fields(parts[0])
        if f.name not in ("problems", "group_size", "completions", "input_ids", "prompt_mask")
    }
    merged |= {
        "problems": [q for r in parts for q in r.problems],
        "group_size": tuple(n for r in parts for n in r.group_sizes),  # an int again when all are equal
        "completions": [c for r in parts for c in r.completions],
        "input_ids": torch.cat(
            [
                torch.cat([_pad(r.input_ids[:, : r.prompt_len], p, pad_token_id, left=True) for r in parts]),
                torch.cat([_pad(r.input_ids[:, r.prompt_len :], w, pad_token_id, left=False) for r in parts]),
            ],
            dim=1,
        ),
        "prompt_mask": torch.cat([_pad(r.prompt_mask, p, 0, left=True) for r in parts]),
    }
    return type(parts[0])(**merged)


def select_groups(rollout: R, groups: torch.Tensor) -> R:
    """The rollout of some of `rollout`'s groups (indices, in the order given), every per-row and
    per-token value with them; widths stay as they are."""
    offsets = rollout.group_offsets
    rows = torch.cat([torch.arange(offsets[q], offsets[q + 1]) for q in groups.tolist()])
    kept = {
        f.name: value[rows.to(value.device)]
        for f in dataclasses.fields(rollout)
        if isinstance(value := getattr(rollout, f.name), torch.Tensor)
    }
    sizes = rollout.group_sizes
    return dataclasses.replace(
        rollout,
        **kept,
        problems=[rollout.problems[q] for q in groups.tolist()],
        group_size=tuple(sizes[q] for q in groups.tolist()),
        completions=[rollout.completions[i] for i in rows.tolist()],
    )


def gather_rollout(world: World, rollout: R, pad_token_id: int) -> R:
    """Every rank's share, merged in rank order, on every rank (the whole rollout of the step)."""
    if not world.distributed:
        return rollout
    parts = all_gather_objects(world, rollout.to("cpu"))
    return merge_rollouts(parts, pad_token_id).to(rollout.input_ids.device)

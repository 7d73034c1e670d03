"""The policy update of one step: `updates_per_rollout` clipped policy-gradient steps on minibatches of
whole groups (paper Eq. 3, the same for every advantage estimator), optionally with a k3 KL term.

Minibatches: the rollout's groups in a seeded random order, split by `torch.tensor_split` into exactly
`optim.updates_per_rollout` parts. With `algo.filter_groups` the groups without a learning signal are
left out first, so parts are smaller (or empty: no optimizer step), but the number of minibatches, and
of scheduler steps, is the same for every arm (docs/algorithm.md Sec. 4). Groups of different sizes
are split the same way, by their number; a minibatch's rows are its groups' (`group_rows`).
"""

from __future__ import annotations

import warnings

import torch
from transformers import PreTrainedModel

from lensrl.config import TrainConfig
from lensrl.core.advantages import group_rows as rows_of_groups
from lensrl.core.advantages import kept_groups
from lensrl.core.loss import policy_loss
from lensrl.policy.distributed import World, all_reduce_sum, average_gradients, is_sharded
from lensrl.policy.forward import by_length, trimmed_logprobs
from lensrl.policy.models import autocast, reference_policy
from lensrl.records import ScoredRollout


class NonFiniteError(RuntimeError):
    """NaN or inf in a step's log-probs, advantages, loss or gradients, under `run.on_nonfinite=stop`."""


def nonfinite(on_nonfinite: str, step: int, what: str) -> None:
    """Stop the run (`run.on_nonfinite=stop`) before the bad values touch the weights; else return (skip)."""
    if on_nonfinite == "stop":
        raise NonFiniteError(
            f"step {step}: non-finite {what}; the run stops with run.on_nonfinite=stop (no update was taken "
            "and the last checkpoint is intact: fix the cause and resume, or set run.on_nonfinite=skip)"
        )


def all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def skip_update(scheduler: torch.optim.lr_scheduler.LRScheduler, updates: int) -> dict[str, float]:
    """A step whose whole update is skipped: the scheduler still steps, as for a skipped minibatch."""
    for _ in range(updates):
        scheduler.step()
    return {"skipped_updates": updates, "lr": scheduler.get_last_lr()[0], "compute/samples_updated": 0}


def minibatch_groups(
    rollout: ScoredRollout, config: TrainConfig, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Group indices of each of the `updates_per_rollout` minibatches (some empty after filtering)."""
    groups = torch.randperm(len(rollout.problems), generator=generator)
    if config.algo.filter_groups:
        keep = kept_groups(rollout.correct, rollout.group_size, config.algo.negative_groups_signal)
        groups = groups[keep.cpu()[groups]]
    return groups.tensor_split(config.optim.updates_per_rollout)


def group_rows(groups: torch.Tensor, group_size: int | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The rollout rows of some groups (rows of a group are contiguous); `group_size` is the rollout's
    (G, or the Q sizes of groups that differ)."""
    if isinstance(group_size, int):
        return (groups[:, None] * group_size + torch.arange(group_size)).flatten().to(device)
    return rows_of_groups(groups, group_size).to(device)


def micro_batch_loss(
    model: PreTrainedModel,
    ref_model: PreTrainedModel | None,
    rollout: ScoredRollout,
    advantages: torch.Tensor,  # (N,)
    micro: torch.Tensor,  # rows of the rollout
    config: TrainConfig,
    num_seqs: int,
    num_tokens: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped loss of some rows of a minibatch (with the KL term when `algo.kl_coef` > 0) and its
    health metrics, normalised by the whole minibatch's `num_seqs` / `num_tokens`: the micro-batch
    losses of a minibatch sum to its loss. One forward pass (two with a KL term), no backward."""
    algo = config.algo
    logprobs_ref = None
    with autocast(config.model, model.device)():
        if algo.kl_coef > 0:
            with torch.no_grad(), reference_policy(model, ref_model) as ref:
                logprobs_ref, _ = trimmed_logprobs(ref, rollout, micro, config.rollout.temperature)
        logprobs, _ = trimmed_logprobs(model, rollout, micro, config.rollout.temperature)
        return policy_loss(
            logprobs,
            rollout.logprobs_old[micro],
            advantages[micro],
            rollout.response_mask[micro],
            clip_low=algo.clip_low,
            clip_high=algo.clip_high,
            agg=algo.loss_agg,
            logprobs_ref=logprobs_ref,
            kl_coef=algo.kl_coef,
            num_seqs=num_seqs,
            num_tokens=num_tokens,
            norm_length=config.rollout.max_new_tokens,
        )


def update_policy(
    model: PreTrainedModel,
    ref_model: PreTrainedModel | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rollout: ScoredRollout,
    advantages: torch.Tensor,  # (N,)
    config: TrainConfig,
    generator: torch.Generator,
    world: World = World(),
    step: int = 0,
) -> dict[str, float]:
    """One optimizer step per minibatch; returns the update's metrics.

    With several ranks, each takes an equal share of every minibatch's groups; its loss is scaled by
    the world size and gradients are averaged over ranks: the whole minibatch's gradient. A minibatch
    whose gradient is not finite is skipped (counted) or stops the run (`run.on_nonfinite`). With
    groups of different sizes the ranks' shares of rows differ; the loss is still normalised by the
    whole minibatch's sequences and tokens (not under FSDP, whose ranks must run the same passes).
    """
    optim, g = config.optim, rollout.group_size
    if not isinstance(g, int) and world.distributed and is_sharded(model):
        raise ValueError("groups of different sizes need run.parallel=ddp: FSDP ranks must run the same passes")
    device = rollout.input_ids.device
    minibatches = minibatch_groups(rollout, config, generator)
    algo = config.algo
    kept = kept_groups(rollout.correct, g, algo.negative_groups_signal).cpu()  # `algo.normalize_by`
    updated = torch.cat(minibatches)
    updated_rows = group_rows(updated, g, device)
    n_updated_tokens = rollout.response_mask[updated_rows].sum().item()
    taken = [mb for mb in minibatches if len(mb)]
    # the optimizer's own list: FSDP2 leaves unsharded stand-ins on the root module after a forward pass
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    summed: dict[str, float] = {"loss/policy": 0.0}  # this rank's part of the means over the update
    totals: dict[str, float] = {"skipped_updates": 0, "groups/updated": len(updated) / len(rollout.problems)}
    totals["compute/samples_updated"] = len(updated_rows)  # after filtering
    grad_norms = []
    model.train()
    for mb_groups in minibatches:
        if not len(mb_groups):  # filtering left this minibatch nothing: no optimizer step
            with warnings.catch_warnings():  # torch warns of a scheduler step before any optimizer step
                warnings.simplefilter("ignore", UserWarning)
                scheduler.step()
            continue
        rows = group_rows(mb_groups, g, device)
        norm = rows if config.algo.normalize_by == "all" else group_rows(mb_groups[kept[mb_groups]], g, device)
        norm = norm if len(norm) else rows  # no kept group: every advantage is 0, and so is the gradient
        n_seqs, n_tokens = len(norm), int(rollout.response_mask[norm].sum().item())
        mine = group_rows(mb_groups[world.share(len(mb_groups))], g, device)
        optimizer.zero_grad(set_to_none=True)
        for micro in by_length(mine, rollout.lengths, optim.micro_batch_size):
            loss, metrics = micro_batch_loss(model, ref_model, rollout, advantages, micro, config, n_seqs, n_tokens)
            (loss * world.size).backward()
            summed["loss/policy"] += loss.item() / len(taken)  # micro losses sum to the minibatch's
            for k, v in metrics.items():
                if k != "loss/policy":  # health metrics: token means over every updated token
                    summed[k] = summed.get(k, 0.0) + v * rollout.response_mask[micro].sum().item() / n_updated_tokens
        if not is_sharded(model):  # FSDP2 reduces its gradients itself
            average_gradients(world, trainable)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, optim.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor holding the global norm
            grad_norm = grad_norm.full_tensor()
        if torch.isfinite(grad_norm):  # a NaN loss leaves NaN gradients: this catches both
            optimizer.step()
            grad_norms.append(grad_norm.item())
        else:  # a non-finite gradient would corrupt the weights: skip this minibatch (or stop)
            nonfinite(config.run.on_nonfinite, step, "loss or gradients")
            totals["skipped_updates"] += 1
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    if not taken:  # nothing to learn from: no metric of the loss
        summed |= {"clipfrac": 0.0, "approx_kl": 0.0}
    totals["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else 0.0  # over the steps taken
    totals["lr"] = scheduler.get_last_lr()[0]
    return {**all_reduce_sum(world, summed), **totals}

"""The RLVR trainer: GRPO, or LENS (arXiv 2510.08696), on any Hugging Face causal LM.

One step:
  1. take Q questions in a seeded order and sample G responses each at temperature T / top-p;
  2. score every response with the verifier (0/1);
  3. compute the behaviour log-probs log pi_old (tempered, response tokens only) with one no-grad pass;
  4. advantages: GRPO (group-normalised correctness) or LENS (calibrated rewards, lens-spec.md Sec. 3),
     from the same log-probs the ratio uses, so LENS costs no extra forward pass;
  5. split the Q groups into `updates_per_rollout` minibatches (whole groups) and take one clipped
     policy-gradient step on each (paper Eq. 3), optionally with a k3 KL term to the initial policy.
Departures from the paper: none in the objective. The sampler is Hugging Face `generate` (or, with
rollout.sampler=compact, `decode_compact`, the same distribution); evaluation
samples at the rollout temperature. Under torchrun each rank does steps 1-3 for its share of the
groups and the rollout is gathered before step 4 (`lensrl.distributed`). Files written to the run
folder: config.yaml, metrics.jsonl, eval.jsonl, summary.json, checkpoints/.

Reliability: a checkpoint every `run.save_every` steps holds everything the loop depends on, so
`train(config, resume=True)` (`lensrl train --resume`) goes on from the newest one and ends exactly
where an uninterrupted run would. SIGINT / SIGTERM finish the current step, save and return. NaN or
inf in log-probs, advantages, loss or gradients skip the update (counted) or stop the run
(`run.on_nonfinite`).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from lensrl import verify
from lensrl.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from lensrl.config import BOOKKEEPING, AlgoConfig, TrainConfig, config_differences, save_config
from lensrl.core.advantages import (
    grpo_advantages, group_outcomes, kept_groups, lens_advantages, lens_rewards, negative_group_signal_share,
    uniform_negative_advantages,
)
from lensrl.core.loss import policy_loss
from lensrl.data import Problem, load_problems
from lensrl.distributed import (
    World, all_gather_objects, all_reduce_sum, average_gradients, device_for, init_world, is_sharded,
    shard_model,
)
from lensrl.evaluate import EvalResult, evaluate
from lensrl.models import autocast, is_lora, load_policy, reference_policy
from lensrl.prompts import check_prompt_lengths, format_problems
from lensrl.rollout import (
    Rollout, Verifier, behaviour_logprobs, by_length, gather_rollout, sample, score, trimmed_logprobs,
)
from lensrl.verify import extract_answer, verify_math


@dataclass
class RunResult:
    """What a finished run leaves behind."""

    output_dir: Path
    first_eval: EvalResult
    last_eval: EvalResult
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM": stopped early after saving; resume to go on


class NonFiniteError(RuntimeError):
    """NaN or inf in a step's log-probs, advantages, loss or gradients, under `run.on_nonfinite=stop`."""


def nonfinite(config: TrainConfig, step: int, what: str) -> None:
    """Stop the run (`on_nonfinite=stop`) before the bad values touch the weights; else return (skip)."""
    if config.run.on_nonfinite == "stop":
        raise NonFiniteError(
            f"step {step}: non-finite {what}; the run stops with run.on_nonfinite=stop (no update was taken "
            "and the last checkpoint is intact: fix the cause and resume, or set run.on_nonfinite=skip)"
        )


def compute_advantages(algo: AlgoConfig, rollout: Rollout) -> torch.Tensor:  # (N,)
    """GRPO or LENS advantages of a scored rollout with behaviour log-probs."""
    if algo.advantage == "grpo":
        return grpo_advantages(rollout.correct, rollout.group_size, algo.scale, algo.eps)
    if algo.advantage == "uniform_negative":
        return uniform_negative_advantages(rollout.correct, rollout.group_size, algo.alpha, algo.scale, algo.eps)
    return lens_advantages(
        rollout.correct, rollout.seq_logprobs, rollout.lengths, rollout.group_size,
        alpha=algo.alpha, scope=algo.scope, d_estimator=algo.d_estimator, eps=algo.eps,
    )


class DataOrder:
    """Seeded reshuffle of the training set every epoch; `position` is enough to resume it."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.position = size, seed, 0
        self._epoch, self._perm = -1, []

    def take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            epoch, offset = divmod(self.position, self.size)
            if epoch != self._epoch:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._epoch, self._perm = epoch, torch.randperm(self.size, generator=gen).tolist()
            out.append(self._perm[offset])
            self.position += 1
        return out


def update_policy(
    model: PreTrainedModel,
    ref_model: PreTrainedModel | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rollout: Rollout,
    advantages: torch.Tensor,  # (N,)
    config: TrainConfig,
    generator: torch.Generator,
    world: World = World(),
    step: int = 0,
) -> dict[str, float]:
    """`updates_per_rollout` clipped policy-gradient steps, each on a shuffled minibatch of whole groups.

    With `algo.filter_groups` the groups without a learning signal are left out first (fewer or smaller
    minibatches). With several ranks, each takes an equal share of every minibatch's groups; its loss
    is scaled by the world size and gradients are averaged over ranks: the whole minibatch's gradient.
    """
    algo, optim = config.algo, config.optim
    g = rollout.group_size
    groups = torch.randperm(len(rollout.problems), generator=generator)
    if algo.filter_groups:
        groups = groups[kept_groups(rollout.correct, g, algo.advantage).cpu()[groups]]
    # the optimizer's own list: FSDP2 leaves unsharded stand-ins on the root module after a forward pass
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    updated_rows = (groups[:, None] * g + torch.arange(g)).flatten().to(rollout.input_ids.device)
    n_updated_tokens = rollout.response_mask[updated_rows].sum().item()
    summed: dict[str, float] = {"loss/policy": 0.0}  # this rank's part of the means over the update
    totals: dict[str, float] = {"skipped_updates": 0}
    grad_norms = []
    totals["groups/updated"] = len(groups) / len(rollout.problems)
    minibatches = groups.chunk(optim.updates_per_rollout) if len(groups) else ()  # fewer after filtering
    if not minibatches:  # filtering left nothing to learn from: no step, no change
        return {**summed, **totals, "grad_norm": 0.0, "clipfrac": 0.0, "approx_kl": 0.0,
                "lr": scheduler.get_last_lr()[0]}
    amp = autocast(config.model, model.device)
    model.train()
    for mb_groups in minibatches:
        rows = (mb_groups[:, None] * g + torch.arange(g)).flatten().to(rollout.input_ids.device)
        n_seqs, n_tokens = len(rows), int(rollout.response_mask[rows].sum().item())
        mine = (mb_groups[world.share(len(mb_groups))][:, None] * g + torch.arange(g)).flatten()
        optimizer.zero_grad(set_to_none=True)
        for micro in by_length(mine.to(rollout.input_ids.device), rollout.lengths, optim.micro_batch_size):
            logprobs_ref = None
            with amp():
                if algo.kl_coef > 0:
                    with torch.no_grad(), reference_policy(model, ref_model) as ref:
                        logprobs_ref, _ = trimmed_logprobs(ref, rollout, micro, config.rollout.temperature)
                logprobs, _ = trimmed_logprobs(model, rollout, micro, config.rollout.temperature)
                loss, metrics = policy_loss(
                    logprobs, rollout.logprobs_old[micro], advantages[micro], rollout.response_mask[micro],
                    clip_low=algo.clip_low, clip_high=algo.clip_high, agg=algo.loss_agg,
                    logprobs_ref=logprobs_ref, kl_coef=algo.kl_coef,
                    num_seqs=n_seqs, num_tokens=n_tokens, norm_length=config.rollout.max_new_tokens,
                )
            (loss * world.size).backward()
            summed["loss/policy"] += loss.item() / len(minibatches)  # micro losses sum to the minibatch's
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
            nonfinite(config, step, "loss or gradients")
            totals["skipped_updates"] += 1
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    totals["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else 0.0  # over the steps taken
    totals["lr"] = scheduler.get_last_lr()[0]
    return {**all_reduce_sum(world, summed), **totals}


def _all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def rollout_metrics(rollout: Rollout, advantages: torch.Tensor, algo: AlgoConfig) -> dict[str, float]:
    """What tells a researcher the rollouts are healthy: rewards, group outcomes, confidence, lengths."""
    correct, g = rollout.correct, rollout.group_size
    pibar = (rollout.seq_logprobs / rollout.lengths).exp()
    mask = rollout.response_mask
    lengths = rollout.lengths
    metrics = {
        "reward": correct.mean().item(),
        **group_outcomes(correct, g),
        "pibar/correct": pibar[correct > 0].mean().item() if (correct > 0).any() else math.nan,
        "pibar/wrong": pibar[correct == 0].mean().item() if (correct == 0).any() else math.nan,
        "entropy": ((rollout.entropy * mask).sum() / mask.sum()).item(),
        "response_len/mean": lengths.mean().item(),
        "response_len/max": lengths.max().item(),
        "truncated": rollout.truncated.float().mean().item(),
        "unparseable": sum(extract_answer(c) is None for c in rollout.completions) / len(rollout.completions),
        "adv/abs_mean": advantages.abs().mean().item(),
        "adv/negative_group_share": negative_group_signal_share(advantages, correct, g),
    }
    if algo.advantage == "lens" and torch.isfinite(rollout.seq_logprobs).all():
        metrics["lens/calibrated_reward"] = lens_rewards(
            correct, rollout.seq_logprobs, lengths, g, algo.d_estimator
        ).mean().item()
    return metrics


def start_run_folder(config: TrainConfig, kind: str, resume_step: int | None = None) -> Path:
    """`run.output_dir` (or a new time-stamped folder under runs/), holding the resolved config.

    A fresh run (`resume_step` None) starts the logs anew; a resumed one keeps the records up to its
    checkpoint's step and drops later ones (and a line cut short by a kill), so none is lost or doubled.
    """
    if config.run.output_dir:
        out = Path(config.run.output_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{stamp}-{kind}-seed{config.run.seed}"
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    for name in ("metrics.jsonl", "eval.jsonl"):
        if resume_step is None or not (out / name).exists():
            (out / name).unlink(missing_ok=True)
            continue
        kept = []
        for line in (out / name).read_text().splitlines():
            try:
                if json.loads(line)["step"] <= resume_step:
                    kept.append(line + "\n")
            except (ValueError, KeyError):
                pass
        write_atomic(out / name, "".join(kept))
    return out


def write_atomic(path: Path, text: str) -> None:
    """Write a temporary file and rename it: readers see the old or the new file, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def resume_checkpoint(config: TrainConfig) -> Path | None:
    """The checkpoint `train(config, resume=True)` goes on from, after checking the run is the same.

    The saved config may differ from `config` only in bookkeeping and `run.steps` (a run can be
    extended). No complete checkpoint yet: None (the run starts from the beginning, with a warning).
    """
    if not config.run.output_dir:
        raise ValueError("resuming needs the run folder: set run.output_dir (lensrl train --resume RUN_DIR)")
    out = Path(config.run.output_dir)
    changed = config_differences(out, config, (*BOOKKEEPING, "run.steps"))
    if changed:
        raise ValueError(f"cannot resume {out}: its config.yaml differs in {', '.join(changed)}; "
                         "resume with the same settings, or start a new run in another folder")
    checkpoint = latest_checkpoint(out)
    if checkpoint is None and (out / "metrics.jsonl").exists():
        warnings.warn(f"{out}: no complete checkpoint to resume from; starting from the beginning", stacklevel=3)
    return checkpoint


def train_or_resume(config: TrainConfig, verifier: Verifier = verify_math) -> RunResult:
    """`train` into `run.output_dir`, going on from where an interrupted run of the same config stopped.

    For tools that own their run folders (studies, compare): a folder left by a run of a different
    config is cleared first.
    """
    out = Path(config.run.output_dir)
    if config_differences(out, config):
        shutil.rmtree(out)
    return train(config, verifier, resume=True)


class GracefulStop:
    """While active, SIGINT / SIGTERM ask the loop to stop after the current step (`requested` holds
    the signal's name); a second signal acts at once, as it would without this."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # handlers only work there
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested is not None:
            self._restore()
            signal.raise_signal(signum)
            return
        self.requested = signal.Signals(signum).name
        warnings.warn(f"{self.requested}: finishing this step, then saving a checkpoint and stopping "
                      "(send it again to stop at once)", stacklevel=2)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()


def train(config: TrainConfig, verifier: Verifier = verify_math, resume: bool = False) -> RunResult:
    """Run GRPO or LENS as configured; returns the first and last evaluation.

    `resume=True` goes on from the newest complete checkpoint in `run.output_dir` (see
    `resume_checkpoint`). Launched by torchrun / accelerate with several processes, it trains
    data-parallel (or sharded, `run.parallel=fsdp`) as `lensrl.distributed` describes; rank 0 writes
    the run folder.
    """
    with GracefulStop() as stop:
        return _train(config, verifier, resume, stop)


def _train(config: TrainConfig, verifier: Verifier, resume: bool, stop: GracefulStop) -> RunResult:
    run, ro = config.run, config.rollout
    world = init_world(config.model.device)
    if world.distributed and config.algo.filter_groups:
        raise ValueError("algo.filter_groups needs a single process (ranks would get unequal numbers of groups)")
    if ro.questions_per_step % (config.optim.updates_per_rollout * world.size):
        raise ValueError(
            f"rollout.questions_per_step={ro.questions_per_step} must be divisible by optim.updates_per_rollout"
            f" x world size = {config.optim.updates_per_rollout} x {world.size} (every rank gets whole groups)"
        )
    checkpoint = resume_checkpoint(config) if resume else None
    if not resume and run.output_dir and latest_checkpoint(Path(run.output_dir)) is not None:
        raise ValueError(f"{run.output_dir} holds checkpoints of an earlier run: continue it with --resume "
                         "(train(config, resume=True)), or start this one in a new run.output_dir")
    start = int(checkpoint.name.removeprefix("step_")) if checkpoint else 0
    if start > run.steps:
        raise ValueError(f"{checkpoint} is past run.steps={run.steps}; resume with run.steps >= {start}")
    folder = start_run_folder(config, config.algo.advantage, start if checkpoint else None) if world.is_main else None
    out = Path(all_gather_objects(world, str(folder))[0])
    torch.manual_seed(run.seed)
    model_config = config.model.model_copy(update={"device": device_for(world, config.model.device)})
    model, tokenizer = load_policy(model_config, checkpoint)
    ref_model = None
    if config.algo.kl_coef > 0 and not is_lora(model):  # a frozen copy costs memory: only when it is used
        ref_model, _ = load_policy(model_config)  # the initial policy, also when resuming
        ref_model.requires_grad_(False).eval()
    sharded = world.distributed and run.parallel == "fsdp"
    if sharded:
        model = shard_model(model)
        ref_model = shard_model(ref_model) if ref_model is not None else None
    amp = autocast(config.model, model.device)
    train_set, eval_set = (
        check_prompt_lengths(format_problems(ps, tokenizer, config.prompt), tokenizer, model.config, ro,
                             config.data.skip_bad_rows)
        for ps in load_problems(config.data, run.seed)
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    warmup = config.optim.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
    order = DataOrder(len(train_set), run.seed)
    generator = torch.Generator().manual_seed(run.seed)
    if checkpoint:
        state = load_trainer_state(checkpoint, optimizer, scheduler, world)
        order.position = state["data_position"]
        generator.set_state(state["generator"])
    progress = run.progress and world.is_main

    def run_eval(step: int) -> EvalResult:
        with amp():
            result = evaluate(
                model, tokenizer, eval_set, verifier, ro, run.eval_samples,
                seed=run.seed * 7919 + step, step=step, progress=progress, world=world, synced_gpus=sharded,
            )
        if world.is_main:
            append_jsonl(out / "eval.jsonl", result.to_json())
        return result

    def save(step: int) -> None:
        save_checkpoint(out, step, model, tokenizer, optimizer, scheduler,
                        {"data_position": order.position, "generator": generator.get_state()},
                        run.keep_checkpoints, world)

    if checkpoint:  # the evaluations up to the checkpoint are in the log already
        evals = [EvalResult(**e) for e in all_gather_objects(world, read_jsonl(out / "eval.jsonl"))[0]]
        first, last = evals[0], evals[-1]
    else:
        first = last = run_eval(0)
    local_groups = ro.questions_per_step // world.size
    chunks_per_rank = -(-local_groups // max(1, ro.generation_batch_size // ro.group_size))
    bar = tqdm(range(start + 1, run.steps + 1), desc=f"{config.algo.advantage}", disable=not progress,
               initial=start, total=run.steps)
    for step in bar:
        t0 = time.perf_counter()
        problems: list[Problem] = [train_set[i] for i in order.take(ro.questions_per_step)]
        verify_before = verify.stats()
        with amp():  # this rank's share of whole groups
            rollout = sample(
                model, tokenizer, problems[world.share(len(problems))], ro.group_size, ro.temperature, ro.top_p,
                ro.max_new_tokens, ro.generation_batch_size, seed=run.seed * 1_000_003 + step,
                first_chunk=world.rank * chunks_per_rank, synced_gpus=sharded, sampler=ro.sampler,
            )
        t_sampled = time.perf_counter()
        rollout.correct = score(rollout, verifier)
        verify_counts = {f"verify/{k}": v - verify_before[k] for k, v in verify.stats().items()}
        t1 = time.perf_counter()
        with amp():
            rollout.logprobs_old, rollout.entropy = behaviour_logprobs(
                model, rollout, ro.temperature, config.optim.micro_batch_size
            )
        rollout = gather_rollout(world, rollout, tokenizer.pad_token_id)
        finite = _all_finite(rollout.logprobs_old)  # padding too: the loss multiplies it by a 0 mask
        advantages = compute_advantages(config.algo, rollout) if finite else torch.zeros_like(rollout.correct)
        t2 = time.perf_counter()
        if finite and _all_finite(advantages):
            update = update_policy(model, ref_model, optimizer, scheduler, rollout, advantages, config, generator,
                                   world, step)
        else:  # skip the whole update (the scheduler still steps, as it does for skipped minibatches)
            nonfinite(config, step, "behaviour log-probs or advantages")
            for _ in range(config.optim.updates_per_rollout):
                scheduler.step()
            update = {"skipped_updates": config.optim.updates_per_rollout, "lr": scheduler.get_last_lr()[0]}
        t3 = time.perf_counter()
        metrics = {"step": step, **rollout_metrics(rollout, advantages, config.algo),
                   **all_reduce_sum(world, verify_counts), **update}
        metrics |= {"time/rollout": t1 - t0, "time/sample": t_sampled - t0, "time/reward": t1 - t_sampled,
                    "time/logprobs": t2 - t1, "time/update": t3 - t2, "time/step": t3 - t0}
        if world.is_main:
            append_jsonl(out / "metrics.jsonl", metrics)
        bar.set_postfix({  # reward: calibrated under LENS; pass: share of correct samples
            "reward": f"{metrics.get('lens/calibrated_reward', metrics['reward']):.3f}",
            "pass": f"{metrics['reward']:.3f}", "neg": f"{metrics['groups/negative']:.2f}",
            "kl": f"{metrics.get('approx_kl', math.nan):.4f}", "clip": f"{metrics.get('clipfrac', math.nan):.3f}",
        })
        if step == run.steps:
            break
        if run.eval_every and step % run.eval_every == 0:
            last = run_eval(step)
        stopping = all_reduce_sum(world, {"stop": float(stop.requested is not None)})["stop"] > 0
        if stopping or (run.save_every and step % run.save_every == 0):
            save(step)
        if stopping:
            return RunResult(out, first, last, stopped_by=stop.requested or "a signal on another rank")
    if checkpoint is None or start < run.steps:
        if run.steps > 0:
            last = run_eval(run.steps)
        save(run.steps)
    if world.is_main:
        metrics = read_jsonl(out / "metrics.jsonl")
        summary = {"first_eval": first.to_json(), "last_eval": last.to_json(), "steps": run.steps,
                   "algorithm": config.algo.advantage, "seed": run.seed, "world_size": world.size,
                   "skipped_updates": sum(m.get("skipped_updates", 0) for m in metrics)}
        write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    return RunResult(out, first, last)

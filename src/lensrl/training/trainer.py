"""The RLVR trainer: GRPO, LENS (docs/algorithm.md) or any registered estimator, on any Hugging Face causal LM.

One step:
  1. take Q questions in a seeded order and sample G responses each at temperature T / top-p;
  2. score every response with the verifier (0/1);
  3. compute the behaviour log-probs log pi_old (tempered, response tokens only) with one no-grad pass;
  4. advantages from the configured estimator (`config.algo.advantages`), from the same log-probs the ratio
     uses, so LENS costs no extra forward pass;
  5. `updates_per_rollout` clipped policy-gradient steps on minibatches of whole groups (`lensrl.training.update`);
     every `run.diagnostic_every` steps, before them, GRPO's gradient of the first minibatch is
     compared with the run's estimator's, LENS's in a GRPO run (`lensrl.training.diagnostics`; it
     changes nothing the run computes).
Departures from the paper: none in the objective. The sampler is Hugging Face `generate` (or, with
rollout.sampler=compact, `decode_compact`, the same distribution); evaluation samples at the rollout
temperature. Sampling, scoring and log-probs are `lensrl.rollout.collect`'s (shared with `lensrl grad-diff`);
under torchrun each rank does them for its share of the groups and the rollout is gathered before
step 4 (`lensrl.policy.distributed`). The run folder, resume rules and evaluations are
`lensrl.runs.lifecycle`'s; seeds are `lensrl.seeds`'.

Compute: every step logs what it generated (compute/prompts, compute/samples, compute/tokens) and
how many samples reached the update (compute/samples_updated), and the run's totals since step 1
(compute/total_*), which checkpoints keep. A budget (`run.max_samples`, `run.max_tokens`) ends the
run after the first step whose totals reach it, with the final evaluation and checkpoint there.

Reliability: a checkpoint every `run.save_every` steps holds everything the loop depends on, so
`train(config, resume=True)` (`lensrl train --resume`) goes on from the newest one and ends exactly
where an uninterrupted run would. SIGINT / SIGTERM finish the current step, save and return. NaN or
inf in log-probs, advantages, loss or gradients skip the update (counted) or stop the run
(`run.on_nonfinite`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_constant_schedule_with_warmup

from lensrl.config import RunConfig, TrainConfig, config_differences
from lensrl.data.sources import first_per_level, load_problems
from lensrl.evaluation.evaluate import EvalResult, EvalSettings
from lensrl.policy.distributed import World, all_gather_objects, all_reduce_sum, device_for, init_world, shard_model
from lensrl.policy.models import frozen_weights_cast, is_lora, load_policy
from lensrl.policy.prepare import prepare
from lensrl.records import Compute, Problem, ScoredRollout
from lensrl.rollout.collect import Collected, collect_rollout
from lensrl.rollout.select import Selector, selector
from lensrl.rollout.verifier import Verifier, VerifierLike
from lensrl.rollout.verify import MATH_VERIFIER, as_verifier
from lensrl.runs.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from lensrl.runs.lifecycle import (
    GracefulStop,
    RunFolder,
    RunResult,
    checkpoint_step,
    clear_folder,
    evaluate_and_log,
    open_run,
    owned,
)
from lensrl.runs.samples import sample_record
from lensrl.seeds import DataOrder
from lensrl.timer import Timer
from lensrl.training.diagnostics import gradient_comparison
from lensrl.training.metrics import (
    compute_from_metrics,
    compute_metrics,
    progress_postfix,
    rollout_metrics,
    verifier_metrics,
)
from lensrl.training.update import NonFiniteError, all_finite, nonfinite, skip_update, update_policy

__all__ = ["NonFiniteError", "RunResult", "Session", "StepResult", "train", "train_or_resume"]


@dataclass
class Session:
    """Everything the step loop works on, loaded once (and restored from a checkpoint when resuming)."""

    model: PreTrainedModel
    ref_model: PreTrainedModel | None  # a frozen initial policy, only for a KL term without LoRA
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    order: DataOrder  # which training problems come next
    generator: torch.Generator  # the minibatch shuffle
    train_set: list[Problem]
    eval_set: list[Problem]
    sharded: bool  # FSDP2 under torchrun
    selector: Selector  # which prompts a step samples, and how many samples each (`rollout.selection`)
    # the run's compute up to the checkpoint (none: zero); None from a checkpoint written before
    # compute accounting, rebuilt from metrics.jsonl (`loop`)
    compute: Compute | None = Compute()


def train(config: TrainConfig, verifier: VerifierLike = MATH_VERIFIER, resume: bool = False) -> RunResult:
    """Run the configured estimator's RL, scoring with `verifier` (a plain function is wrapped by
    `verify.as_verifier`; its counts are logged as verify/* every step); returns the first and last evaluation.

    `resume=True` goes on from the newest complete checkpoint in `run.output_dir` (see
    `lifecycle.resume_checkpoint`), which must hold a run (a missing folder is an error). Launched by
    torchrun / accelerate with several processes, it trains data-parallel (or sharded,
    `run.parallel=fsdp`) as `lensrl.policy.distributed` describes; rank 0 writes the run folder.
    Data errors are reported before any model is loaded.
    """
    return _train(config, verifier, resume)


def _train(config: TrainConfig, verifier: VerifierLike, resume: bool, fresh_start_ok: bool = False) -> RunResult:
    """`train`; `fresh_start_ok`: resuming a folder that holds no run yet starts it (`train_or_resume`)."""
    world = init_world(config.model.device)
    check_layout(config, world)
    problems = load_problems(config.data, config.run.seed)
    opened = open_run(config, config.algo.advantage, world, resume, fresh_start_ok=fresh_start_ok)
    with GracefulStop() as stop, opened as (folder, checkpoint):
        session = setup(config, world, checkpoint, problems)
        return loop(config, session, folder, world, checkpoint, as_verifier(verifier), stop)


def train_or_resume(config: TrainConfig, verifier: VerifierLike = MATH_VERIFIER) -> RunResult:
    """`train` into `run.output_dir`, going on from where an interrupted run of the same config stopped.

    For tools that own their run folders (studies, compare): a folder left by a run of a different
    config is cleared first; one that differs only in run.steps, with no checkpoint past them, is
    extended (or cut short).
    """
    with owned(config.run.output_dir) as out:
        changed = config_differences(out, config)
        extendable = changed == ["run.steps"] and checkpoint_step(latest_checkpoint(out)) <= config.run.steps
        if changed and not extendable:
            clear_folder(out)
        return _train(config, verifier, resume=True, fresh_start_ok=True)


def check_layout(config: TrainConfig, world: World) -> None:
    """Every rank gets whole groups of every minibatch."""
    if world.distributed and config.algo.filter_groups:
        raise ValueError("algo.filter_groups needs a single process (ranks would get unequal numbers of groups)")
    if world.distributed and config.run.diagnostic_every:
        raise ValueError(
            "run.diagnostic_every needs a single process (the diagnostic takes whole minibatches); "
            "set run.diagnostic_every=0 under torchrun"
        )
    q, updates = config.rollout.questions_per_step, config.optim.updates_per_rollout
    if q % (updates * world.size):
        raise ValueError(
            f"rollout.questions_per_step={q} must be divisible by optim.updates_per_rollout x world size = "
            f"{updates} x {world.size} (every rank gets whole groups)"
        )


def setup(
    config: TrainConfig, world: World, checkpoint: Path | None, problems: tuple[list[Problem], list[Problem]]
) -> Session:
    """Load the policy (from the checkpoint when resuming) and format the problems (`prepare`), build the
    optimizer."""
    torch.manual_seed(config.run.seed)
    device = device_for(world, config.model.device)
    prepared = prepare(config, *problems, weights=checkpoint, device=device)
    model, order = prepared.model, prepared.order
    ref_model = None
    if config.algo.kl_coef > 0 and not is_lora(model):  # a frozen copy costs memory: only when it is used
        # the initial policy, also when resuming
        ref_model, _ = load_policy(config.model.model_copy(update={"device": device}))
        ref_model.requires_grad_(False).eval()
    sharded = world.distributed and config.run.parallel == "fsdp"
    if sharded:
        model = shard_model(model)
        ref_model = shard_model(ref_model) if ref_model is not None else None
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.optim.lr, weight_decay=config.optim.weight_decay
    )
    scheduler = get_constant_schedule_with_warmup(optimizer, config.optim.warmup_steps)
    generator = torch.Generator().manual_seed(config.run.seed)
    compute: Compute | None = Compute()
    selection_state = None
    if checkpoint:
        state = load_trainer_state(checkpoint, optimizer, scheduler, world)
        order.position = state["data_position"]
        generator.set_state(state["generator"])
        compute = Compute.from_json(state["compute"]) if "compute" in state else None
        selection_state = state.get("selection")  # none before rollout.selection: a uniform run's history
    return Session(
        model,
        ref_model,
        prepared.tokenizer,
        optimizer,
        scheduler,
        order,
        generator,
        prepared.train_set,
        prepared.eval_set,
        sharded,
        selector(config, prepared.tokenizer.pad_token_id, selection_state),
        compute,
    )


def budgets_reached(run: RunConfig, total: Compute) -> list[str]:
    """The budgets (`run.max_samples`, `run.max_tokens`) that a run's totals `total` reach."""
    budgets = (("run.max_samples", run.max_samples, total.samples), ("run.max_tokens", run.max_tokens, total.tokens))
    return [name for name, budget, spent in budgets if budget is not None and spent >= budget]


def loop(
    config: TrainConfig,
    s: Session,
    folder: RunFolder,
    world: World,
    checkpoint: Path | None,
    verifier: Verifier,
    stop: GracefulStop,
) -> RunResult:
    """Steps from the checkpoint's (or 0) to `run.steps`, or to the first step whose totals reach a budget
    (`budgets_reached`), evaluating, saving and logging as configured. A run resumed from a checkpoint
    where a budget was reached (a finished budget run) trains nothing more."""
    run = config.run
    if s.compute is None:  # a checkpoint from before compute accounting: the logs up to it (cut back already)
        total = all_gather_objects(world, compute_from_metrics(folder.metrics(), config) if world.is_main else None)[0]
    else:
        total = s.compute

    def evaluate_at(step: int, problems: Sequence[Problem] = s.eval_set) -> EvalResult:
        settings = EvalSettings.of_run(config, step)
        return evaluate_and_log(
            s.model, s.tokenizer, problems, settings, config.model, folder, verifier, world, s.sharded
        )

    between = s.eval_set if run.mid_eval_per_level is None else first_per_level(s.eval_set, run.mid_eval_per_level)

    def save(step: int) -> None:
        save_checkpoint(
            folder.path,
            step,
            s.model,
            s.tokenizer,
            s.optimizer,
            s.scheduler,
            {
                "data_position": s.order.position,
                "generator": s.generator.get_state(),
                "compute": total.to_json(),
                "selection": s.selector.state(),
            },
            run.keep_checkpoints,
            world,
        )

    start = checkpoint_step(checkpoint)
    if checkpoint:  # the evaluations up to the checkpoint are in the log already
        evals = all_gather_objects(world, folder.evals())[0]
        first, last = evals[0], evals[-1]
    else:
        first = last = evaluate_at(0)
    end = start  # the last step trained
    bar = tqdm(
        range(start + 1, start + 1 if budgets_reached(run, total) else run.steps + 1),
        desc=config.algo.advantage,
        disable=not (run.progress and world.is_main),
        initial=start,
        total=run.steps,
    )
    for step in bar:
        with frozen_weights_cast(s.model, config.model):  # the same numbers, cast once a step
            result = train_step(config, s, step, world, verifier)
        total += result.compute
        end = step
        metrics = result.metrics | compute_metrics(total, "total_")
        folder.log_metrics(metrics)
        if run.sample_every and step % run.sample_every == 0:
            folder.log_samples(sample_record(result.rollout, result.advantages, config.algo, step, run.sample_groups))
        bar.set_postfix(progress_postfix(metrics))
        if step == run.steps or budgets_reached(run, total):
            break
        if run.eval_every and step % run.eval_every == 0:
            last = evaluate_at(step, between)
        stopping = all_reduce_sum(world, {"stop": float(stop.requested is not None)})["stop"] > 0
        if stopping or (run.save_every and step % run.save_every == 0):
            save(step)
        if stopping:
            return RunResult(folder.path, first, last, stopped_by=stop.requested or "a signal on another rank")
    bar.close()
    if checkpoint is None or end > start:
        if end > 0:
            last = evaluate_at(end)
        save(end)
    folder.write_summary(
        first,
        last,
        steps=end,
        ended_by=" and ".join(budgets_reached(run, total)) or "run.steps",
        compute=total.to_json(),
        algorithm=config.algo.advantage,
        seed=run.seed,
        world_size=world.size,
        skipped_updates=sum(m.get("skipped_updates", 0) for m in folder.metrics()),
    )
    return RunResult(folder.path, first, last)


@dataclass(frozen=True)
class StepResult:
    """What one training step leaves: its metrics (a metrics.jsonl record but the run's totals), the
    step's whole rollout, the advantages the update used and what the step generated and updated on."""

    metrics: dict[str, float]
    rollout: ScoredRollout
    advantages: torch.Tensor  # (N,)
    compute: Compute


def train_step(config: TrainConfig, s: Session, step: int, world: World, verifier: Verifier) -> StepResult:
    """The rollout (`collect_rollout`: sample, score, behaviour log-probs), advantages and the update of
    one step."""
    timer = Timer()
    with timer("step"):

        def take(n: int) -> list[Problem]:
            return [s.train_set[i] for i in s.order.take(n)]

        def collect(problems: Sequence[Problem], seed: int, samples: Sequence[int] | None) -> Collected:
            return collect_rollout(
                s.model, s.tokenizer, problems, config, seed, verifier, world, s.sharded, timer, samples=samples
            )

        selected = s.selector.select(step, take, collect)
        collected = selected.collected
        rollout = collected.rollout
        with timer("logprobs"):  # the advantages come from the behaviour log-probs
            finite = all_finite(rollout.logprobs_old)  # padding too: the loss multiplies it by a 0 mask
            advantages = config.algo.advantages(rollout) if finite else torch.zeros_like(rollout.correct)
        healthy = finite and all_finite(advantages)
        diagnostic = {}
        if healthy and config.run.diagnostic_every and step % config.run.diagnostic_every == 0:
            # before the update: the weights that sampled the rollout; it changes no weight and no random state
            with timer("diagnostic"):
                diagnostic = gradient_comparison(s.model, rollout, config, s.generator)
        with timer("update"):
            if healthy:
                update = update_policy(
                    s.model,
                    s.ref_model,
                    s.optimizer,
                    s.scheduler,
                    rollout,
                    advantages,
                    config,
                    s.generator,
                    world,
                    step,
                )
            else:
                nonfinite(config.run.on_nonfinite, step, "behaviour log-probs or advantages")
                update = skip_update(s.scheduler, config.optim.updates_per_rollout)
    compute = dataclasses.replace(collected.compute, samples_updated=int(update.pop("compute/samples_updated")))
    seconds = timer.seconds
    if "diagnostic" in seconds:
        diagnostic["time/diagnostic"] = seconds["diagnostic"]
    metrics = {
        "step": step,
        **rollout_metrics(rollout, advantages, config.algo),
        **all_reduce_sum(world, verifier_metrics(collected.verified)),
        **update,
        **compute_metrics(compute),
        **selected.metrics,
        **diagnostic,
        "time/rollout": seconds["sample"] + seconds["reward"],
        **{f"time/{phase}": seconds[phase] for phase in ("sample", "reward", "logprobs", "update", "step")},
    }
    return StepResult(metrics, rollout, advantages, compute)

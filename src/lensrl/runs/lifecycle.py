"""The run lifecycle: a run folder owned by one process, its logs, resume rules, stops and evaluations.

Every command that writes a run folder (`train`, `sft`, `lensrl eval --output-dir`, studies and
`compare`) goes through here, so the files mean the same thing everywhere:

    config.yaml      the resolved config
    metrics.jsonl    one record per step ({"step": s, ...})
    eval.jsonl       one `EvalResult` per evaluation
    samples.jsonl    every `run.sample_every` steps, some whole groups of the rollout (`lensrl.runs.samples`)
    summary.json     first and last evaluation and run facts, written at the end
    checkpoints/     `lensrl.runs.checkpoint`
    run.lock         the live process that owns the folder (removed when it is done)

Ownership: `owned(folder)` admits one live process at a time; a second one is refused with a message
naming the owner, and a lock left by a process that no longer runs is taken over. Resume: a run goes
on from its newest complete checkpoint only with the same config (bookkeeping and `run.steps` aside),
and its logs are cut back to that step. Evaluation: `evaluate_and_log` samples as its `EvalSettings` say (a run's:
`seeds.eval_seed(run seed, step)`) and appends the result to eval.jsonl. Trackers (`run.report_to`,
`lensrl.runs.trackers`) get everything the files get, from the same calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lensrl.config import BOOKKEEPING, ModelConfig, RunConfig, TrainConfig, config_differences, load_config, save_config
from lensrl.evaluation.evaluate import EvalResult, EvalSettings, evaluate
from lensrl.policy.distributed import World, all_gather_objects
from lensrl.policy.models import autocast, frozen_weights_cast
from lensrl.records import Problem, Rollout
from lensrl.rollout.verifier import VerifierLike
from lensrl.rollout.verify import MATH_VERIFIER
from lensrl.runs.checkpoint import latest_checkpoint
from lensrl.runs.jsonl import append_jsonl, read_jsonl, write_atomic
from lensrl.runs.samples import sample_table
from lensrl.runs.trackers import Tracker, open_trackers

LOCK = "run.lock"
LOGS = ("metrics.jsonl", "eval.jsonl", "samples.jsonl")


@dataclass
class RunResult:
    """What a finished run leaves behind."""

    output_dir: Path
    first_eval: EvalResult
    last_eval: EvalResult
    stopped_by: str | None = None  # "SIGINT" / "SIGTERM": stopped early after saving; resume to go on


# ------------------------------------------------------------------------------------ ownership


class RunFolderBusy(ValueError):
    """The run folder is owned by another live process."""


_held: set[Path] = set()  # folders this process owns (ownership is re-entrant within a process)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _owner(lock: Path) -> dict | None:
    """The lock's owner record, or None when it is unreadable (a process killed while writing it)."""
    try:
        owner = json.loads(lock.read_text())
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def owned(folder: str | Path) -> Iterator[Path]:
    """Own `folder` (created if needed) for the block: one live process per run folder.

    The lock file holds the owner's pid, host and start time. Another live owner on this host (or any
    owner on another host, whose liveness cannot be checked) is a `RunFolderBusy` error naming it; a
    lock whose process has exited is stale and is taken over with a warning.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        yield folder
        return
    lock = folder / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(lock)
            if owner is not None and (owner.get("host") != me["host"] or _alive(owner["pid"])):
                raise RunFolderBusy(
                    f"{folder} is in use by process {owner['pid']} on {owner.get('host', '?')} (since "
                    f"{owner.get('since', '?')}); wait for it to end or stop it. If that process is gone, "
                    f"delete {lock}"
                ) from None
            if owner is None and time.time() - lock.stat().st_mtime < 5:  # being written right now
                time.sleep(0.2)
                continue
            warnings.warn(
                f"{lock}: taking over the lock of process {owner['pid'] if owner else '?'}, which has ended",
                stacklevel=3,
            )
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        break
    _held.add(key)
    try:
        yield folder
    finally:
        _held.discard(key)
        if (_owner(lock) or {}).get("pid") == me["pid"]:
            lock.unlink(missing_ok=True)


def clear_folder(folder: Path) -> None:
    """Remove everything in an owned run folder but its lock (a tool that owns the folder starts over)."""
    for child in folder.iterdir():
        if child.name == LOCK:
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()


# ------------------------------------------------------------------------------------ the folder


class RunFolder:
    """A run's output folder, and the trackers that mirror it; only the main process (`is_main`) writes."""

    def __init__(self, path: str | Path, is_main: bool = True, trackers: Sequence[Tracker] = ()):
        self.path, self.is_main, self.trackers = Path(path), is_main, list(trackers)

    def start(self, config: TrainConfig, resume_step: int | None = None) -> None:
        """Write the resolved config and start the logs: anew for a fresh run (`resume_step` None); a
        resumed one keeps the records up to its checkpoint's step and drops later ones (and a line cut
        short by a kill), so none is lost or doubled."""
        if not self.is_main:
            return
        save_config(config, self.path / "config.yaml")
        for name in LOGS:
            log = self.path / name
            if resume_step is None or not log.exists():
                log.unlink(missing_ok=True)
                continue
            kept = []
            for line in log.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line + "\n")
                except (ValueError, KeyError):
                    pass
            write_atomic(log, "".join(kept))

    def log_metrics(self, record: dict) -> None:
        if self.is_main:
            append_jsonl(self.path / "metrics.jsonl", record)
            for tracker in self.trackers:
                tracker.log({k: v for k, v in record.items() if k != "step"}, record["step"])

    def log_eval(self, result: EvalResult) -> None:
        if self.is_main:
            append_jsonl(self.path / "eval.jsonl", result.to_json())
            for tracker in self.trackers:
                tracker.log(eval_metrics(result), result.step)

    def log_samples(self, record: dict) -> None:
        """One sample-log entry (`lensrl.runs.samples.sample_record`): samples.jsonl and a tracker table."""
        if self.is_main:
            append_jsonl(self.path / "samples.jsonl", record)
            columns, rows = sample_table(record)
            for tracker in self.trackers:
                tracker.log_table("samples", columns, rows, record["step"])

    def config(self) -> TrainConfig:
        """The run's resolved config, from its config.yaml."""
        return load_config(str(self.path / "config.yaml"))

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / "metrics.jsonl")

    def evals(self) -> list[EvalResult]:
        return [EvalResult(**e) for e in read_jsonl(self.path / "eval.jsonl")]

    def write_summary(self, first: EvalResult, last: EvalResult, **facts: object) -> None:
        if self.is_main:
            summary = {"first_eval": first.to_json(), "last_eval": last.to_json(), **facts}
            write_atomic(self.path / "summary.json", json.dumps(summary, indent=2))


def eval_metrics(result: EvalResult) -> dict[str, float]:
    """An evaluation as flat tracker metrics: eval/pass@k, eval/L<level>/pass@k, eval/all_wrong, and
    when measured eval/no_final_answer (`EvalResult.unparseable`, under the per-step metric's name) and
    eval/response_tokens."""
    metrics = {f"eval/{k}": v for k, v in result.overall.items()} | {"eval/all_wrong": result.all_wrong}
    measured = {"no_final_answer": result.unparseable, "response_tokens": result.response_tokens}
    metrics |= {f"eval/{name}": v for name, v in measured.items() if v is not None}
    for level, by_k in result.per_level.items():
        metrics |= {f"eval/L{level}/{k}": v for k, v in by_k.items()}
    return metrics


def run_folder_path(run: RunConfig, kind: str) -> Path:
    """`run.output_dir`, or a new time-stamped folder under runs/."""
    if run.output_dir:
        return Path(run.output_dir)
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-seed{run.seed}"


def resume_checkpoint(config: TrainConfig, command: str = "train") -> Path | None:
    """The checkpoint a resumed run goes on from, after checking the run is the same.

    The saved config may differ from `config` only in bookkeeping and `run.steps` (an RL run can be
    extended; a warm-start's length is `sft.steps`, which may not change: its learning-rate schedule
    depends on it). No complete checkpoint yet: None (the run starts from the beginning, with a warning).
    """
    out = Path(_resume_folder(config, command))
    changed = config_differences(out, config, (*BOOKKEEPING, "run.steps"))
    if changed:
        raise ValueError(
            f"cannot resume {out}: its config.yaml differs in {', '.join(changed)}; "
            "resume with the same settings, or start a new run in another folder"
        )
    checkpoint = latest_checkpoint(out)
    if checkpoint is None and (out / "metrics.jsonl").exists():
        warnings.warn(f"{out}: no complete checkpoint to resume from; starting from the beginning", stacklevel=3)
    return checkpoint


def _resume_folder(config: TrainConfig, command: str) -> str:
    if not config.run.output_dir:
        raise ValueError(
            f"resuming needs the run folder: lensrl {command} --resume --output-dir RUN_DIR (in Python: run.output_dir)"
        )
    return config.run.output_dir


def check_resumable(path: Path, command: str, owned_now: bool = False) -> None:
    """A folder `--resume` can go on from: one that exists (checked before it is owned, which creates it)
    and, once owned, holds a run (its config.yaml or checkpoints/); a `ValueError` naming it otherwise
    (a mistyped folder must not start a fresh run)."""
    if not path.is_dir():
        reason = "no such folder"
    elif owned_now and not (path / "config.yaml").exists() and latest_checkpoint(path) is None:
        reason = "it holds no config.yaml and no checkpoints/"
    else:
        return
    raise ValueError(
        f"no run to resume in {path} ({reason}); check the folder name, or start a new run there "
        f"without --resume (lensrl {command} --output-dir {path})"
    )


def resolve_model(model: str, config_path: str | None = None, overrides: Sequence[str] = ()) -> tuple[TrainConfig, str]:
    """The config and the weights of a MODEL argument (`lensrl eval`, `lensrl grad-diff`).

    A run folder (one with `checkpoints/`) gives its newest complete checkpoint, with its config.yaml
    as the base config unless `config_path` is given; anything else (a model folder, a hub id,
    "testbed") is loaded as it is, with `config_path` or the defaults. Overrides go on top. A folder
    that holds neither a model nor checkpoints is an error naming it.
    """
    folder = Path(model)
    if not (folder / "checkpoints").is_dir():
        if folder.is_dir() and not any((folder / name).exists() for name in ("config.json", "adapter_config.json")):
            raise ValueError(
                f"{model} holds no model (no config.json) and no checkpoints/: give a model folder, a hub id, "
                '"testbed", a run folder or one of its checkpoints/step_N'
            )
        return load_config(config_path, list(overrides)), model
    checkpoint = latest_checkpoint(folder)
    if checkpoint is None:
        raise ValueError(f"{model}: no complete checkpoint under {folder / 'checkpoints'}")
    saved = folder / "config.yaml"
    base = config_path if config_path is not None else (saved if saved.exists() else None)
    return load_config(base, list(overrides)), str(checkpoint)


@contextlib.contextmanager
def open_run(
    config: TrainConfig,
    kind: str,
    world: World = World(),
    resume: bool = False,
    steps_key: str = "run.steps",
    fresh_start_ok: bool = False,
) -> Iterator[tuple[RunFolder, Path | None]]:
    """Own the run folder, apply the resume rules and start its logs; yields the folder and the
    checkpoint to go on from (None: a fresh start).

    A fresh run refuses a folder that holds an earlier run's checkpoints; a resumed one needs a folder
    that holds a run (`check_resumable`; `fresh_start_ok`: a missing or empty one starts afresh, for
    tools that own their run folders), checks its config (`resume_checkpoint`), says on stderr from
    which step it goes on, and must not be past its length already (`steps_key`: the config field that
    holds it, `sft.steps` for a warm-start).
    """
    command = "sft" if kind == "sft" else "train"
    if resume:
        _resume_folder(config, command)  # before a new folder is named
    path = Path(all_gather_objects(world, str(run_folder_path(config.run, kind)))[0])  # rank 0 names it
    if resume and not fresh_start_ok:
        check_resumable(path, command)  # before `owned` creates it
    with owned(path) if world.is_main else contextlib.nullcontext():
        if resume and not fresh_start_ok:
            check_resumable(path, command, owned_now=True)
        checkpoint = resume_checkpoint(config, command) if resume else None
        if not resume and latest_checkpoint(path) is not None:
            raise ValueError(
                f"{path} holds checkpoints of an earlier run: continue it with lensrl {command} --resume "
                f"--output-dir {path} ({command}(config, resume=True)), or start this one in a new run.output_dir"
            )
        section, field = steps_key.split(".")
        start, steps = checkpoint_step(checkpoint), getattr(getattr(config, section), field)
        if start > steps:
            raise ValueError(f"{checkpoint} is past {steps_key}={steps}; resume with {steps_key} >= {start}")
        if checkpoint is not None and world.is_main:
            print(f"resuming {path} from step {start}", file=sys.stderr, flush=True)
        trackers = open_trackers(config, path, kind, resumed=checkpoint is not None) if world.is_main else []
        folder = RunFolder(path, world.is_main, trackers)
        try:
            folder.start(config, start if checkpoint else None)
            yield folder, checkpoint
        finally:
            for tracker in trackers:
                tracker.close()


def checkpoint_step(checkpoint: Path | None) -> int:
    return int(checkpoint.name.removeprefix("step_")) if checkpoint else 0


# ------------------------------------------------------------------------------------ evaluation


def evaluate_and_log(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    settings: EvalSettings,
    model_config: ModelConfig,
    folder: RunFolder | None = None,
    verifier: VerifierLike = MATH_VERIFIER,
    world: World = World(),
    synced_gpus: bool = False,
    on_chunk: Callable[[Rollout, torch.Tensor], None] | None = None,
) -> EvalResult:
    """Evaluate the policy (`evaluate`; a run's evaluation at a step is `EvalSettings.of_run`), with the
    autocast and weight casts `model_config` asks for, and append the result to the folder's eval.jsonl
    (none without a `folder`). `on_chunk` sees every chunk of samples with its verdicts, as in `evaluate`."""
    with autocast(model_config, model.device)(), frozen_weights_cast(model, model_config):
        result = evaluate(
            model, tokenizer, problems, verifier, settings, world=world, synced_gpus=synced_gpus, on_chunk=on_chunk
        )
    if folder is not None:
        folder.log_eval(result)
    return result


# ------------------------------------------------------------------------------------ stopping


class GracefulStop:
    """While active, SIGINT / SIGTERM ask the loop to stop after the current step (`requested` holds
    the signal's name), saying so in one line on stderr; a second signal acts at once, as it would
    without this."""

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
        print(
            f"\nlensrl: {self.requested}: finishing this step's update, then saving a checkpoint and stopping "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()

"""Experiment trackers (`run.report_to`): TensorBoard, Weights & Biases, Trackio, MLflow.

`lensrl.runs.lifecycle` opens them on rank 0 before the model is loaded (a missing package fails at once)
and gives them what the run folder gets: every metrics.jsonl record and evaluation (`log`), the sample
log (`log_table`), and `close` at the end, also after an error (the run is then marked failed where
the tracker has such a state). Each imports its library only when asked for; the extras
`lensrl[tensorboard]`, `[wandb]`, `[trackio]`, `[mlflow]` (all: `[trackers]`) install them.

Each run's parameters are the resolved config, its name the run folder's name, and its files stay in
the run folder where the tracker allows it:

    tensorboard/     TensorBoard event files (scalars, the config as hparams, tables as Markdown text)
    wandb/           W&B's local files; `wandb_run_id` holds the run id, so a resumed run goes on in
                     the same W&B run (mode, project and entity from W&B's environment variables)
    mlflow.db        MLflow's store, with artifacts in mlartifacts/, unless MLFLOW_TRACKING_URI names
                     another; `mlflow_run_id` holds the run id (experiment: MLFLOW_EXPERIMENT_NAME or
                     "lensrl")

Trackio keeps its local store where TRACKIO_DIR says (default: under the Hugging Face cache), project
"lensrl", and a resumed run goes on in the run of the same name. A tracker that fails while the run
is going (a full disk, a lost connection) warns and the run goes on.
"""

from __future__ import annotations

import importlib
import json
import numbers
import os
import re
import secrets
import sys
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from lensrl.config import flatten

if TYPE_CHECKING:
    from lensrl.config import TrainConfig

PROJECT = "lensrl"
CELL_CHARS = 300  # longest table cell in TensorBoard's Markdown (whole rows stay readable)


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None: ...

    def close(self) -> None: ...


def open_trackers(config: TrainConfig, run_dir: Path, kind: str, resumed: bool) -> list[Tracker]:
    """Start the trackers of `run.report_to` for the run in `run_dir` (`kind`: the algorithm or "sft";
    `resumed`: going on from a checkpoint). A tracker whose package is missing is a ValueError naming
    the pip command; those already started are closed first."""
    opened: list[Tracker] = []
    try:
        for name in dict.fromkeys(config.run.report_to):
            opened.append(TRACKERS[name](config, Path(run_dir), kind, resumed))
    except BaseException:
        for tracker in opened:
            tracker.close()
        raise
    return opened


# ------------------------------------------------------------------------------------ shared


def require(tracker: str, *modules: str) -> list[ModuleType]:
    """Import a tracker's modules, or say which extra brings them."""
    try:
        return [importlib.import_module(module) for module in modules]
    except ImportError as e:
        why = "" if e.name == modules[0] else f" ({e})"
        raise ValueError(
            f'run.report_to=[{tracker}] needs the {tracker} package: pip install "lensrl[{tracker}]"{why}'
        ) from e


def flat_config(config: TrainConfig) -> dict[str, str | int | float | bool]:
    """The resolved config as flat parameters: dotted keys (`run.steps`), lists and None as JSON text."""
    return {
        key: value if isinstance(value, str | int | float | bool) else json.dumps(value)
        for key, value in flatten(config.model_dump(mode="json")).items()
    }


def stored_id(path: Path, resumed: bool) -> str | None:
    """The tracker run id kept in the run folder, when resuming."""
    return (path.read_text().strip() or None) if resumed and path.exists() else None


class _Tracker(ABC):
    """What every tracker shares: only numbers are logged as metrics, and a tracker that fails while
    the run is going warns instead of stopping it (the run's own files have everything)."""

    name: ClassVar[str]

    def log(self, metrics: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}
        if values:
            self._safely(self._log, values, step)

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        self._safely(self._log_table, name, list(columns), [list(row) for row in rows], step)

    def close(self) -> None:
        """End the tracker's run; called while an exception propagates, it is marked as failed."""
        self._safely(self._close, sys.exc_info()[0] is not None)

    def _safely(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception as e:
            warnings.warn(
                f"run.report_to={self.name}: {type(e).__name__}: {e} (ignored: the run folder has everything)",
                stacklevel=3,
            )

    @abstractmethod
    def _log(self, metrics: dict[str, float], step: int) -> None: ...

    @abstractmethod
    def _log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None: ...

    @abstractmethod
    def _close(self, failed: bool) -> None: ...


# ------------------------------------------------------------------------------------ trackers


class TensorBoardTracker(_Tracker):
    """Event files in run_dir/tensorboard/: scalars, the config as hparams, tables as Markdown text."""

    name = "tensorboard"

    def __init__(self, config: TrainConfig, run_dir: Path, kind: str, resumed: bool):
        require(self.name, "tensorboard")
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # a resumed run appends a new event file; TensorBoard reads them together
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), flush_secs=10)
        for summary in hparams(flat_config(config), {}):
            self.writer.file_writer.add_summary(summary)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def _log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        self.writer.add_text(name, markdown_table(columns, rows), step)

    def _close(self, failed: bool) -> None:
        self.writer.close()


def markdown_table(columns: list[str], rows: list[list]) -> str:
    """A Markdown table, each cell on one line and at most `CELL_CHARS` long."""

    def cell(value: object) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        text = text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")

    lines = [columns, ["---"] * len(columns), *([cell(v) for v in row] for row in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


class WandbTracker(_Tracker):
    """A W&B run in run_dir/wandb/, its id in run_dir/wandb_run_id; W&B's environment sets the mode
    (WANDB_MODE=offline works), project (WANDB_PROJECT, default "lensrl") and entity."""

    name = "wandb"

    def __init__(self, config: TrainConfig, run_dir: Path, kind: str, resumed: bool):
        (self.wandb,) = require(self.name, "wandb")
        id_file = run_dir / "wandb_run_id"
        run_id = stored_id(id_file, resumed) or secrets.token_hex(4)
        self.run = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", PROJECT),
            name=run_dir.name,
            id=run_id,
            dir=run_dir,
            config=config.model_dump(mode="json"),
            job_type=kind,
            resume="allow" if resumed else None,
            reinit="create_new",  # never hand back a run the caller started for something else
        )
        id_file.write_text(run_id)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def _log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        self.run.log({name: self.wandb.Table(columns=columns, data=rows, allow_mixed_types=True)}, step=step)

    def _close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)
        if self.wandb.run is None:  # no other run of this process needs W&B's service process
            self.wandb.teardown()


class TrackioTracker(_Tracker):
    """A run in Trackio's local project "lensrl" (stored where TRACKIO_DIR says), grouped by kind."""

    name = "trackio"

    def __init__(self, config: TrainConfig, run_dir: Path, kind: str, resumed: bool):
        (self.trackio,) = require(self.name, "trackio")
        self.run = self.trackio.init(
            project=PROJECT,
            name=run_dir.name,
            group=kind,
            config=config.model_dump(mode="json"),
            resume="allow" if resumed else "never",
            embed=False,
        )

    def _log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def _log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        self.run.log({name: self.trackio.Table(columns=columns, data=rows)}, step=step)

    def _close(self, failed: bool) -> None:
        self.run.finish()


class MLflowTracker(_Tracker):
    """An MLflow run: in MLFLOW_TRACKING_URI if set, else in a SQLite store in the run folder (no server).

    MLflow metric names allow letters, digits and `_-. :/` only: `eval/pass@1` is logged as
    `eval/pass_at_1`; NaN is kept and the store turns +-inf into the largest float. Tables are JSON
    artifacts, one per step (`samples/step_000010.json`).
    """

    name = "mlflow"

    def __init__(self, config: TrainConfig, run_dir: Path, kind: str, resumed: bool):
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow = require(self.name, "mlflow", *(() if uri else ("sqlalchemy", "alembic")))[0]
        from mlflow.entities import Param

        self.client = mlflow.tracking.MlflowClient(uri or f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")
        id_file = run_dir / "mlflow_run_id"
        previous = self._find(stored_id(id_file, resumed))
        if previous is not None:
            self.run_id = previous.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            logged = set(previous.data.params)  # they cannot change: a resumed run only adds new ones
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else self.client.create_experiment(
                    name, artifact_location=None if uri else (run_dir.resolve() / "mlartifacts").as_uri()
                )
            )
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"kind": kind}).info.run_id
            logged = set()
        id_file.write_text(self.run_id)
        params = [Param(k, str(v)) for k, v in flat_config(config).items() if k not in logged]
        self.client.log_batch(self.run_id, params=params)

    def _find(self, run_id: str | None) -> Any:
        """The run `run_id` in this store; None without an id or when the store does not have it (a
        different MLFLOW_TRACKING_URI, a deleted store)."""
        from mlflow.exceptions import MlflowException

        if run_id is None:
            return None
        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(mlflow_key(k), v, now, step) for k, v in metrics.items()])

    def _log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        data = {column: [row[i] for row in rows] for i, column in enumerate(columns)}
        self.client.log_table(self.run_id, data, f"{mlflow_key(name)}/step_{step:06d}.json")

    def _close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def mlflow_key(key: str) -> str:
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))


TRACKERS: dict[str, Callable[[TrainConfig, Path, str, bool], Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "trackio": TrackioTracker,
    "mlflow": MLflowTracker,
}

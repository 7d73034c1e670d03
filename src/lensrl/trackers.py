"""Experiment trackers (`run.report_to`): TensorBoard, Weights & Biases, Trackio, MLflow.

TO BE IMPLEMENTED (see the brief). Interface used by `lensrl.lifecycle`:
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from lensrl.config import TrainConfig


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None: ...

    def close(self) -> None: ...


def open_trackers(config: TrainConfig, run_dir: Path, kind: str, resumed: bool) -> list[Tracker]:
    if config.run.report_to:
        raise NotImplementedError
    return []

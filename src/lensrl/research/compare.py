"""GRPO vs LENS from one config with the same seeds: the main study's arms, on any config.

`lensrl compare` trains the main study's arms (`lensrl.research.study`) over the given config instead of the
testbed defaults, into `run.output_dir` (default runs/compare/), and writes the same aggregate,
table and plots as a study: compare.json, compare.md, compare.png, compare_curves.png, and
runs/<arm>_seed<s>.json.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lensrl.config import TrainConfig, apply_overrides
from lensrl.research.study import STUDIES, Arm, StudyResult, train_arms, write_report

MAIN = dataclasses.replace(STUDIES["main"], overrides=())  # the arms only: the given config decides the rest


def compare(config: TrainConfig, seeds: list[int]) -> StudyResult:
    """Train each arm once per seed (same data order and sampling seeds) and aggregate pass@k.

    Runs go on from their checkpoints, so an interrupted comparison resumes and a finished run of
    the same config is not trained again."""
    root = Path(config.run.output_dir or "runs/compare")

    def config_of(arm: Arm, seed: int) -> TrainConfig:
        return apply_overrides(
            config, [*arm.overrides, f"run.seed={seed}", f"run.output_dir={root / f'{arm.name}_seed{seed}'}"]
        )

    records = train_arms(MAIN, seeds, config_of, root / "runs")
    command = f"lensrl compare --seeds {','.join(map(str, seeds))} --output-dir {root}"
    return write_report(MAIN, seeds, records, root, command, "compare")

"""GRPO vs LENS from one config with the same seeds: a two-arm study on any config.

`lensrl compare` trains two arms, `grpo` and `lens` (`COMPARISON`, run as a study's arms are by
`lensrl.research.study`), over the given config, into `run.output_dir` (default runs/compare/), and
writes the same aggregate, table and plots as a study: compare.json, compare.md, compare.png,
compare_curves.png, and runs/<arm>_seed<s>.json.
"""

from __future__ import annotations

from pathlib import Path

from lensrl.config import TrainConfig, apply_overrides
from lensrl.research.arms import Arm, Study
from lensrl.research.study import StudyResult, train_arms, write_report

COMPARISON = Study(
    "compare",
    "Does LENS beat GRPO at pass@1..16, overall and on the hardest levels?",
    (Arm("grpo", ("algo.advantage=grpo",)), Arm("lens", ("algo.advantage=lens",))),
)
"""The arms only (GRPO the reference, then LENS): the given config decides everything else."""


def compare(config: TrainConfig, seeds: list[int]) -> StudyResult:
    """Train each arm once per seed (same data order and sampling seeds) and aggregate pass@k.

    Runs go on from their checkpoints, so an interrupted comparison resumes and a finished run of
    the same config is not trained again."""
    root = Path(config.run.output_dir or "runs/compare")

    def config_of(arm: Arm, seed: int) -> TrainConfig:
        return apply_overrides(
            config, [*arm.overrides, f"run.seed={seed}", f"run.output_dir={root / f'{arm.name}_seed{seed}'}"]
        )

    records = train_arms(COMPARISON, seeds, config_of, root / "runs")
    command = f"lensrl compare --seeds {','.join(map(str, seeds))} --output-dir {root}"
    return write_report(COMPARISON, seeds, records, root, command, "compare")

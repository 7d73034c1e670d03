"""How many of each level's evaluation problems also occur in a testbed's training stages.

For the carry and signs testbeds' default evaluation set (100 problems per level, the evaluation
seed) this counts, per level, the problems that occur in the warm-start stream the base policy was
trained on (`lensrl.testbed.warmstart_problems`) and in the RL pool of each run seed (the default
run's 20,000 training problems), and the distinct problems of the level in both. The held-out set of
`signs-negative` (`unseen: true`) is checked the same way (it must be 0 everywhere).

    python -m experiments.eval_overlap [--seeds 0,1,2,3,4] [--output results/eval_overlap.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.studies import UNSEEN_EVAL
from lensrl import load_config, load_problems, warmstart_problems

DEFAULT_CONFIGS = {"carry": None, "signs": "testbed:signs"}  # the default run of each testbed


def overlap(testbed: str, seeds: list[int], overrides: tuple[str, ...] = ()) -> dict:
    """Per level: evaluation problems (and distinct ones) found in the warm-start stream and in each seed's RL pool."""
    warm = {p.id for p in warmstart_problems(testbed)}
    out: dict = {}
    for seed in seeds:
        config = load_config(DEFAULT_CONFIGS[testbed], [*overrides, f"run.seed={seed}"])
        train, evals = load_problems(config.data, seed)
        pool = {p.id for p in train}
        for level in sorted({p.level for p in evals}):
            ids = [p.id for p in evals if p.level == level]
            row = out.setdefault(str(level), {"problems": len(ids), "distinct": len(set(ids)), "rl_pool": {}})
            row["warm_start"] = sum(i in warm for i in ids)  # the same for every seed when the set is
            row["rl_pool"][str(seed)] = sum(i in pool for i in ids)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--output", default="results/eval_overlap.json")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    report = {
        "command": "python -m experiments.eval_overlap " + " ".join(argv),
        "default_eval": {testbed: overlap(testbed, seeds) for testbed in DEFAULT_CONFIGS},
        "signs_negative_unseen_eval": overlap("signs", seeds, (UNSEEN_EVAL,)),
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    for name, by_testbed in (
        ("default", report["default_eval"]),
        ("unseen", {"signs": report["signs_negative_unseen_eval"]}),
    ):
        for testbed, levels in by_testbed.items():
            for level, row in levels.items():
                pool = list(row["rl_pool"].values())
                print(
                    f"{name:8s} {testbed:6s} level {level}: {row['problems']} problems ({row['distinct']} distinct), "
                    f"warm start {row['warm_start']}, RL pool {min(pool)}-{max(pool)}"
                )


if __name__ == "__main__":
    main(sys.argv[1:])

"""Difficulty profile of a testbed policy: what RL starts from, and whether it is a fit start.

Held-out problems of every level are sampled `samples` times at temperature 1 (no top-k, no top-p)
and verified; the result is an ordinary `EvalResult` (pass@k and all-wrong shares per level and on the
uniform L1-5 mix). A base policy fits the testbed when level 1 is mostly solved, level 5 mostly not yet
within reach of sampling, and a fair share of groups is all wrong (so LENS has negative groups):

    python -m lensrl.testbed.profile [--model-dir DIR] [--json profile.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from lensrl.config import ModelConfig, RunConfig, TrainConfig
from lensrl.evaluate import EvalResult, format_table
from lensrl.lifecycle import evaluate_and_log
from lensrl.models import load_policy
from lensrl.seeds import EVAL_SEED
from lensrl.testbed.problems import LEVELS, generate_problems


def measure_profile(
    model_dir: str | Path = "testbed",
    problems_per_level: int = 200,
    samples: int = 16,
    seed: int = EVAL_SEED,
    levels: Sequence[int] = LEVELS,
    device: str = "cpu",
    progress: bool = False,
) -> EvalResult:
    """pass@k and all-wrong shares of `problems_per_level` held-out problems per level.

    The problems and the samples are both seeded by `seed` (the held-out set's own seed, so the
    profile depends on no run).
    """
    config = TrainConfig(model=ModelConfig(name_or_path=str(model_dir), device=device),
                         run=RunConfig(eval_samples=samples, progress=progress))
    problems = generate_problems(problems_per_level * len(levels), levels, seed=seed)
    model, tokenizer = load_policy(config.model)
    return evaluate_and_log(model, tokenizer, problems, config, step=0, seed=seed)


def acceptance(result: EvalResult) -> dict[str, bool]:
    """The testbed's requirements on its base policy (T = 1, G = 16)."""
    top = f"pass@{result.samples}"
    level1, level5 = result.per_level["1"], result.per_level["5"]
    return {
        "level-1 pass@1 >= 0.60": level1["pass@1"] >= 0.60,
        "level-5 pass@1 <= 0.15": level5["pass@1"] <= 0.15,
        f"level-5 {top} >= 2 x pass@1": level5[top] >= 2 * level5["pass@1"],
        "all-wrong share on the L1-5 mix in [0.20, 0.60]": 0.20 <= result.all_wrong <= 0.60,
    }


def _main() -> None:
    parser = argparse.ArgumentParser(description="Measure the difficulty profile of a testbed policy.")
    parser.add_argument("--model-dir", default="testbed", help="policy folder (default: the base policy)")
    parser.add_argument("--problems-per-level", type=int, default=200)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the profile and the checks to this JSON file")
    args = parser.parse_args()
    result = measure_profile(args.model_dir, args.problems_per_level, args.samples, args.seed, device=args.device,
                             progress=True)
    checks = acceptance(result)
    print(format_table({"base": result}))
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json is not None:
        record = {**result.to_json(), "checks": checks, "command": "python -m lensrl.testbed.profile"}
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    _main()

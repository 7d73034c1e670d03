"""The SmolLM2 chain-sum warm start, committed, and the lr 5e-5 follow-up's finished runs as study records.

    python experiments/smollm2_warm_start.py

1. Trains the LoRA warm start (`lensrl sft` with configs/smollm2/sft_chain_sum.yaml into
   RUNS_DIR/sft, or reuses a finished one there) and checks it against the committed log of the one
   every chain-sum RL run so far started from (results/smollm2/chain_sum/logs/sft): the loss and
   gradient norm of every step and the evaluations must be equal, else it stops. Then copies the
   final adapter with its config to results/smollm2/chain_sum/warmstart/ (`SMOLLM2_WARM_START`), so
   that the RL configs start from a file in the repository.
2. Writes the study records (`RunRecord`) of the follow-up's three finished runs (GRPO seeds 0-1,
   LENS seed 0; `lensrl study smollm2-lr5e-5`) from their committed logs, whose run folders are gone.
   Each logged config must equal the study arm's config except for the warm start's path (it was
   the run folder of step 1's run then). With the records there, the study trains only LENS seed 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from smollm2_chain_sum import CONFIGS, keep_adapter

from lensrl.config import config_differences, load_config
from lensrl.research.registry import SMOLLM2_WARM_START, get_study
from lensrl.research.study import arm_config, run_record
from lensrl.runs.jsonl import read_jsonl
from lensrl.training.sft import sft

RESULTS = Path("results/smollm2/chain_sum")
FOLLOW_UP = ("grpo_seed0", "grpo_seed1", "lens_seed0")


def same_log(new: Path, committed: Path) -> list[str]:
    """Where the new SFT run's log differs from the committed one (loss, grad norm, lr per step; evaluations)."""
    problems = []
    ours, theirs = read_jsonl(new / "metrics.jsonl"), read_jsonl(committed / "metrics.jsonl")
    keys = ("step", "loss", "grad_norm", "lr")
    if [{k: m[k] for k in keys} for m in ours] != [{k: m[k] for k in keys} for m in theirs]:
        problems.append("metrics.jsonl (loss, grad_norm or lr)")
    strip = lambda evals: [{k: v for k, v in e.items() if not k.startswith("time")} for e in evals]  # noqa: E731
    if strip(read_jsonl(new / "eval.jsonl")) != strip(read_jsonl(committed / "eval.jsonl")):
        problems.append("eval.jsonl")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", default="runs/smollm2_chain_sum")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    sft_dir = Path(args.runs_dir) / "sft"
    config = load_config(
        CONFIGS / "sft_chain_sum.yaml", [f"run.output_dir={sft_dir}", f"run.progress={not args.no_progress}"]
    )
    if not (sft_dir / "summary.json").exists():
        sft(config)
    problems = same_log(sft_dir, RESULTS / "logs" / "sft")
    if problems:
        raise SystemExit(f"the warm start differs from the committed one in {', '.join(problems)}; nothing written")
    keep_adapter(sft_dir, Path(SMOLLM2_WARM_START))
    print(f"warm start: the committed log reproduced step for step; adapter in {SMOLLM2_WARM_START}")

    study = get_study("smollm2-lr5e-5")
    records = study.results_dir / "runs"
    records.mkdir(parents=True, exist_ok=True)
    arms = {arm.name: arm for arm in study.arms}
    for name in FOLLOW_UP:
        arm, _, seed = name.partition("_seed")
        logged = study.results_dir / "logs" / name
        config = arm_config(study, arms[arm], int(seed), Path(f"runs/study/{study.name}"), None, [])
        changed = config_differences(logged, config)
        if changed != ["model.adapter"]:
            raise SystemExit(f"{logged}: its config differs from the study's in {changed}, not only the warm start's path")
        record = dataclasses.replace(run_record(logged, arm, int(seed)), config=config.model_dump())
        (records / f"{name}.json").write_text(json.dumps(record.to_json()))
        print(f"record {records / name}.json from {logged}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

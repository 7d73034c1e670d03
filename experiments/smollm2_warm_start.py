"""The SmolLM2 chain-sum warm start, trained again and committed, with how closely it reproduces the old one.

    python -m experiments.smollm2_warm_start

Trains the LoRA warm start (`lensrl sft` with configs/smollm2/sft_chain_sum.yaml into RUNS_DIR/sft,
or reuses a finished one there), copies its final adapter with its config to
results/smollm2/chain_sum/warmstart/ (`SMOLLM2_WARM_START`), so that RL configs start from a file in
the repository, and writes `reproduction.json` there: its per-step loss and gradient norm and its
evaluations beside those of the warm start every chain-sum RL run before it started from (whose
log is committed in results/smollm2/chain_sum/logs/sft and whose adapter was not). The recipe and
data are the same; bfloat16 matmuls round differently on CPUs with different instructions, so on
another CPU the two differ at float level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.machine import describe_machine
from experiments.smollm2_chain_sum import CONFIGS, keep_adapter, keep_logs, read_jsonl
from experiments.studies import SMOLLM2_WARM_START
from lensrl import load_config, sft

RESULTS = Path("results/smollm2/chain_sum")


def reproduction(new: Path, old: Path) -> dict:
    """The new SFT run's loss, gradient norm and evaluations beside the old run's (committed log)."""
    ours, theirs = read_jsonl(new / "metrics.jsonl"), read_jsonl(old / "metrics.jsonl")
    loss_diff = [abs(a["loss"] - b["loss"]) for a, b in zip(ours, theirs, strict=True)]
    evals = {}
    for a, b in zip(read_jsonl(new / "eval.jsonl"), read_jsonl(old / "eval.jsonl"), strict=True):
        evals[a["step"]] = {"pass@1": a["overall"]["pass@1"], "old pass@1": b["overall"]["pass@1"]}
    return {
        "identical": ours == theirs,
        "max_abs_loss_difference": max(loss_diff),
        "mean_abs_loss_difference": sum(loss_diff) / len(loss_diff),
        "final_loss": {"new": ours[-1]["loss"], "old": theirs[-1]["loss"]},
        "loss": {"new": [m["loss"] for m in ours], "old": [m["loss"] for m in theirs]},
        "grad_norm": {"new": [m["grad_norm"] for m in ours], "old": [m["grad_norm"] for m in theirs]},
        "evals_overall": evals,
    }


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
    out = keep_adapter(sft_dir, Path(SMOLLM2_WARM_START))
    keep_logs(sft_dir, out / "log")
    record = {
        "command": "python -m experiments.smollm2_warm_start " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe_machine(),
        **reproduction(sft_dir, RESULTS / "logs" / "sft"),
    }
    (out / "reproduction.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"warm start in {out}; against the old one: identical={record['identical']}, "
        f"max |d loss| {record['max_abs_loss_difference']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

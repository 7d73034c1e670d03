"""GRPO on the signs testbed: the learning-rate sweep that chose the default run, and the learnability
targets on three seeds (results/signs/learnability/).

    python -m experiments.signs_learnability --sweep 3e-6=RUN 1e-5=RUN ... --seeds RUN RUN RUN
    python -m experiments.signs_learnability --report-only   # learnability.md and .png from learnability.json

learnability.md is the table below; notes written above it by hand in an existing learnability.md are
kept when it is rewritten.

Each RUN is a finished run folder: sweep runs are `lensrl train --config testbed:signs
algo.advantage=grpo optim.lr=LR` (seed 0), the seed runs are the default run under GRPO with seeds
0, 1, 2 (the signs-main study's grpo arm). The targets, on the seed runs:

* overall pass@1 rises by at least 10 points (mean over seeds of final minus step 0);
* the std over seeds of the final overall pass@1 is at most a fifth of that rise;
* the training reward rises steadily: the mean reward of each block of 10 steps is at least the
  previous block's minus 0.02 (no drift down within the run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
from importlib.metadata import version
from pathlib import Path

from lensrl import load_config

BLOCK, SLACK = 10, 0.02


def read_jsonl(path: Path) -> list[dict]:
    """Every record of a finished run's JSON-lines log (metrics.jsonl, eval.jsonl)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def running_mean(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` points (fewer at the start), skipping NaNs."""
    out = []
    for i in range(len(values)):
        finite = [v for v in values[max(0, i + 1 - window) : i + 1] if not math.isnan(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def run_summary(folder: Path) -> dict:
    """What the report needs of one run: its config's command, reward curve, evaluations and block means."""
    config = load_config(folder / "config.yaml")
    metrics, evals = read_jsonl(folder / "metrics.jsonl"), read_jsonl(folder / "eval.jsonl")
    rewards = [m["reward"] for m in metrics]
    blocks = [statistics.fmean(rewards[i : i + BLOCK]) for i in range(0, len(rewards), BLOCK)]
    return {
        "lr": config.optim.lr,
        "seed": config.run.seed,
        "advantage": config.algo.advantage,
        "model": config.model.name_or_path,
        "steps": config.run.steps,
        "reward": rewards,
        "block_means": blocks,
        "steady": all(b >= a - SLACK for a, b in zip(blocks, blocks[1:])),
        "evals": [
            {"step": e["step"], "overall": e["overall"], "per_level": e["per_level"], "all_wrong": e["all_wrong"]}
            for e in evals
        ],
        "minutes": round(sum(m["time/step"] for m in metrics) / 60, 1),
    }


def targets(seeds: list[dict]) -> dict:
    start = [r["evals"][0]["overall"]["pass@1"] for r in seeds]
    final = [r["evals"][-1]["overall"]["pass@1"] for r in seeds]
    rise = statistics.fmean(final) - statistics.fmean(start)
    spread = statistics.stdev(final) if len(final) > 1 else float("nan")
    return {
        "start_pass@1": start,
        "final_pass@1": final,
        "rise": rise,
        "final_std": spread,
        "rise >= 0.10": rise >= 0.10,
        "std <= rise / 5": spread <= rise / 5,
        "every seed's reward rises steadily": all(r["steady"] for r in seeds),
    }


def plot(sweep: dict[str, dict], seeds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for i, (lr, run) in enumerate(sweep.items()):
        axes[0].plot(running_mean(run["reward"], 5), color=f"C{i}", label=f"lr {lr}")
        axes[1].plot(
            [e["step"] for e in run["evals"]],
            [100 * e["overall"]["pass@1"] for e in run["evals"]],
            "o-",
            color=f"C{i}",
            label=f"lr {lr}",
        )
    axes[0].set(xlabel="step", ylabel="training reward (5-step mean)", title="GRPO lr sweep (seed 0)")
    axes[1].set(xlabel="step", ylabel="overall pass@1 (%)", title="GRPO lr sweep: held-out pass@1")
    for i, run in enumerate(seeds):
        axes[2].plot(
            [e["step"] for e in run["evals"]],
            [100 * e["overall"]["pass@1"] for e in run["evals"]],
            "o-",
            color=f"C{i}",
            label=f"seed {run['seed']}",
        )
        for level, style in (("5", ":"), ("4", "--")):
            axes[2].plot(
                [e["step"] for e in run["evals"]],
                [100 * e["per_level"][level]["pass@1"] for e in run["evals"]],
                style,
                color=f"C{i}",
                alpha=0.6,
                label=f"seed {run['seed']}, level {level}",
            )
    axes[2].set(xlabel="step", ylabel="pass@1 (%)", title="default run under GRPO: overall (solid), levels 4-5")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(report: dict) -> str:
    """learnability.md: the sweep, one row per lr, then the seed runs against the targets."""
    sweep, seeds = report["sweep"], report["seeds"]
    lines = ["| lr | overall pass@1 by step | final pass@16 | steady | minutes |", "|---|---|---|---|---|"]
    for lr, run in sweep.items():
        curve = " / ".join(f"{100 * e['overall']['pass@1']:.1f}" for e in run["evals"])
        lines.append(
            f"| {lr} | {curve} | {100 * run['evals'][-1]['overall']['pass@16']:.1f} | "
            f"{'yes' if run['steady'] else 'no'} | {run['minutes']} |"
        )
    t = report["targets"]
    lines += [
        "",
        f"GRPO, default run, seeds {[r['seed'] for r in seeds]}: overall pass@1 "
        f"{100 * statistics.fmean(t['start_pass@1']):.1f} -> {100 * statistics.fmean(t['final_pass@1']):.1f} "
        f"(rise {100 * t['rise']:.1f} points, std of the final {100 * t['final_std']:.1f})",
    ]
    lines += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in t.items() if isinstance(ok, bool)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", nargs="+", metavar="LR=RUN")
    parser.add_argument("--seeds", nargs="+", metavar="RUN")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild learnability.md and .png from OUTPUT_DIR/learnability.json alone",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("results/signs/learnability"))
    parser.add_argument("--machine", help="what the runs were trained on, for the report (default: this machine)")
    args = parser.parse_args()
    if args.report_only:
        report = json.loads((args.output_dir / "learnability.json").read_text())
    elif args.sweep and args.seeds:
        sweep = {lr: run_summary(Path(run)) for lr, run in (item.split("=", 1) for item in args.sweep)}
        seeds = [run_summary(Path(run)) for run in args.seeds]
        machine = args.machine or f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {version('torch')}"
        report = {
            "sweep": sweep,
            "seeds": seeds,
            "targets": targets(seeds),
            "machine": machine,
            "rule": "default lr: the largest of the sweep whose GRPO reward rises steadily and whose final "
            "overall pass@1 is at most 80% (headroom for a better method)",
        }
        args.output_dir.mkdir(parents=True, exist_ok=True)
        (args.output_dir / "learnability.json").write_text(json.dumps(report, indent=1))
    else:
        parser.error("give --sweep and --seeds (run folders), or --report-only")
    plot(report["sweep"], report["seeds"], args.output_dir / "learnability.png")
    text = table(report)
    md = args.output_dir / "learnability.md"
    notes, table_found, _ = md.read_text().partition(text.splitlines()[0]) if md.exists() else ("", "", "")
    md.write_text((notes if table_found else "") + text + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""GRPO vs LENS from the same base policy with the same seeds: a side-by-side table, JSON and a plot."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from lensrl.config import TrainConfig
from lensrl.trainer import train_or_resume

ALGORITHMS = ("grpo", "lens")


@dataclass
class CompareReport:
    output_dir: Path
    table: str
    results: dict  # the aggregate written to compare.json


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def compare(config: TrainConfig, seeds: list[int]) -> CompareReport:
    """Train each algorithm once per seed (same data order and sampling seeds) and aggregate pass@k.

    Runs go on from their checkpoints, so an interrupted comparison resumes and a finished run of
    the same config is not trained again."""
    root = Path(config.run.output_dir or "runs/compare")
    runs: dict[str, list[dict]] = {a: [] for a in ALGORITHMS}
    for seed in seeds:
        for algo in ALGORITHMS:
            cfg = config.model_copy(deep=True)
            cfg.algo.advantage = algo
            cfg.run.seed = seed
            cfg.run.output_dir = str(root / f"{algo}_seed{seed}")
            result = train_or_resume(cfg)
            evals = [json.loads(line) for line in (result.output_dir / "eval.jsonl").read_text().splitlines()]
            runs[algo].append({"seed": seed, "evals": evals})

    first = runs[ALGORITHMS[0]][0]["evals"][0]
    scopes = ["all", *first["per_level"]]

    def values(algo: str, scope: str, k: str, index: int = -1) -> list[float]:
        evals = [r["evals"][index] for r in runs[algo]]
        return [(e["overall"] if scope == "all" else e["per_level"][scope])[k] for e in evals]

    ks = list(first["overall"])
    aggregate = {
        algo: {scope: {k: _mean_std(values(algo, scope, k)) for k in ks} for scope in scopes}
        for algo in ALGORITHMS
    }
    # the base policy as every seed's step-0 evaluation saw it (one seed: that evaluation)
    base = {scope: {k: statistics.fmean(values(ALGORITHMS[0], scope, k, 0)) for k in ks} for scope in scopes}
    results = {"seeds": seeds, "steps": config.run.steps, "base": base, "final": aggregate, "runs": runs}
    (root / "compare.json").write_text(json.dumps(results, indent=2))
    table = _table(base, aggregate, scopes, ks, len(seeds))
    (root / "compare.md").write_text(table + "\n")
    _plot(root / "compare.png", runs, base, aggregate, scopes, ks)
    return CompareReport(root, table, results)


def _table(base, aggregate, scopes, ks, n_seeds) -> str:
    spread = f" (mean +- std over {n_seeds} seeds)" if n_seeds > 1 else ""
    lines = [f"pass@k in %, after training{spread}", "",
             "| level | method | " + " | ".join(ks) + " |", "|---|---|" + "---|" * len(ks)]
    for scope in scopes:
        lines.append(f"| {scope} | base | " + " | ".join(f"{100 * base[scope][k]:.1f}" for k in ks) + " |")
        for algo in ALGORITHMS:
            cells = []
            for k in ks:
                m, s = aggregate[algo][scope][k]["mean"], aggregate[algo][scope][k]["std"]
                cells.append(f"{100 * m:.1f}" + (f" +- {100 * s:.1f}" if n_seeds > 1 else ""))
            lines.append(f"| {scope} | {algo} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(path: Path, runs, base, aggregate, scopes, ks) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"grpo": "tab:blue", "lens": "tab:red"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    kv = [int(k.split("@")[1]) for k in ks]
    ax = axes[0]
    ax.plot(kv, [100 * base["all"][k] for k in ks], "k--o", label="base")
    for algo in ALGORITHMS:
        means = [100 * aggregate[algo]["all"][k]["mean"] for k in ks]
        stds = [100 * aggregate[algo]["all"][k]["std"] for k in ks]
        ax.errorbar(kv, means, yerr=stds, marker="o", capsize=3, color=colors[algo], label=algo.upper())
    ax.set(xscale="log", xlabel="k", ylabel="pass@k (%)", title="pass@k overall after training")
    ax.set_xticks(kv, [str(k) for k in kv])
    ax.legend()

    ax = axes[1]
    levels = [s for s in scopes if s != "all"]
    width = 0.27
    xs = range(len(levels))
    ax.bar([x - width for x in xs], [100 * base[lv]["pass@1"] for lv in levels], width, color="gray", label="base")
    for i, algo in enumerate(ALGORITHMS):
        ax.bar([x + i * width for x in xs], [100 * aggregate[algo][lv]["pass@1"]["mean"] for lv in levels], width,
               yerr=[100 * aggregate[algo][lv]["pass@1"]["std"] for lv in levels], color=colors[algo],
               label=algo.upper(), capsize=2)
    ax.set_xticks(list(xs), [f"L{lv}" for lv in levels])
    ax.set(ylabel="pass@1 (%)", title="pass@1 by level after training")
    if levels:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no difficulty levels in this eval set", ha="center", va="center", transform=ax.transAxes)

    ax = axes[2]
    for algo in ALGORITHMS:
        for i, run in enumerate(runs[algo]):
            steps = [e["step"] for e in run["evals"]]
            ax.plot(steps, [100 * e["overall"]["pass@1"] for e in run["evals"]], marker="o", color=colors[algo],
                    alpha=0.8, label=algo.upper() if i == 0 else None)
    ax.set(xlabel="step", ylabel="pass@1 (%)", title="pass@1 over training (each seed)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Studies: every arm of a comparison, over several seeds, resumable, with an aggregate and plots.

`lensrl study NAME` trains each (arm, seed) into `runs/study/NAME/<arm>_seed<s>/` (a run whose
`summary.json` exists with the same resolved config, in this study's folder or another study's, is
reused, so an interrupted study resumes without redoing finished runs and studies share their
common arms) and writes `results/study_NAME/`: `runs/<arm>_seed<s>.json` (its
evaluations and per-step metrics), `study.json` (means, spreads and differences against the first
arm), `study.md` and `study.png`. Arms differ only in their overrides: the same base policy, the
same data order and the same sampling seeds, so the samples differ only through the policies.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lensrl.config import TrainConfig, config_differences, load_config
from lensrl.evaluate import ks_for
from lensrl.lifecycle import RunFolder
from lensrl.plots import running_mean
from lensrl.trainer import train_or_resume

CURVE_METRICS = ("reward", "groups/negative", "adv/negative_group_share", "response_len/mean", "entropy")


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    name: str
    question: str
    arms: tuple[Arm, ...]  # the first is the reference the others are compared with
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: tuple[str, ...] = ("run.eval_every=10",)  # common to every arm


def _alpha(a: float) -> Arm:
    # alpha only scales negative-group advantages, so alpha = 0 is exactly LENS on mixed groups only
    # (tests/unit/test_advantages.py checks the two are equal): that arm reuses the ablation's runs.
    overrides = ("algo.scope=mixed",) if a == 0 else (f"algo.alpha={a}",)
    return Arm(f"lens_alpha{a:g}", ("algo.advantage=lens", *overrides))


STUDIES = {s.name: s for s in (
    Study("main", "Does LENS beat GRPO at pass@1..16, overall and on the hardest levels?",
          (Arm("grpo", ("algo.advantage=grpo",)), Arm("lens", ("algo.advantage=lens",)))),
    Study("ablation", "Which part of LENS helps: the mixed-group or the negative-group reweighting? (paper Table 2)",
          (Arm("grpo", ("algo.advantage=grpo",)), Arm("lens", ("algo.advantage=lens",)),
           Arm("lens_mixed_only", ("algo.advantage=lens", "algo.scope=mixed")),
           Arm("lens_negative_only", ("algo.advantage=lens", "algo.scope=negative")))),
    Study("alpha", "How does LENS depend on alpha, the weight of negative groups?",
          tuple(_alpha(a) for a in (0.25, 0.0, 0.1, 0.5, 1.0))),
    Study("d_estimator", "Length-normalised (pibar) or raw sequence probability in D_imp?",
          (Arm("normalized", ("algo.d_estimator=normalized",)), Arm("sequence", ("algo.d_estimator=sequence",)))),
    Study("group_size", "G = 16 or G = 8 at the same number of samples per step?",
          (Arm("G16", ("rollout.group_size=16", "rollout.questions_per_step=32")),
           Arm("G8", ("rollout.group_size=8", "rollout.questions_per_step=64")))),
    Study("remedies", "What does LENS buy over the simple remedies for all-wrong groups?",
          (Arm("grpo", ("algo.advantage=grpo",)),
           Arm("grpo_filtered", ("algo.advantage=grpo", "algo.filter_groups=true")),
           Arm("uniform_negative", ("algo.advantage=uniform_negative",)),
           Arm("lens", ("algo.advantage=lens",)))),
)}


@dataclass
class StudyResult:
    output_dir: Path
    table: str
    aggregate: dict = field(default_factory=dict)


def arm_config(study: Study, arm: Arm, seed: int, runs_dir: Path, config_path: str | None,
               extra: list[str]) -> TrainConfig:
    overrides = [*study.overrides, *arm.overrides, *extra, f"run.seed={seed}",
                 f"run.output_dir={runs_dir / f'{arm.name}_seed{seed}'}"]
    return load_config(config_path, overrides)


def finished_run(config: TrainConfig, search_root: Path | None = None) -> Path | None:
    """The folder of a completed run of this config: its own output folder, else any study's under
    `search_root` (folders `search_root/<study>/<run>/`).

    Runs are the same when their configs differ only in bookkeeping (`config.BOOKKEEPING`). Studies
    share arms (`lens` of main is `normalized` of d_estimator and `lens_alpha0.25` of alpha), so a run
    trained for one study is reused by the others instead of being trained again.
    """
    own = Path(config.run.output_dir)
    others = sorted(p.parent for p in search_root.glob("*/*/summary.json")) if search_root is not None else []
    for folder in [own, *others]:
        if (folder / "summary.json").exists() and config_differences(folder, config) == []:
            return folder
    return None


def train_arms(study: Study, seeds: list[int], config_of: Callable[[Arm, int], TrainConfig],
               records_dir: Path, search_root: Path | None = None) -> dict[str, list[dict]]:
    """Train every (arm, seed) that has no finished run yet; each run's record (`run_record`, plus its
    arm and seed) is written to `records_dir/<arm>_seed<s>.json` and returned by arm, in seed order."""
    records_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, list[dict]] = {arm.name: [] for arm in study.arms}
    for seed in seeds:
        for arm in study.arms:
            config = config_of(arm, seed)
            run_dir = finished_run(config, search_root)
            if run_dir is None:
                run_dir = train_or_resume(config).output_dir
            record = {"arm": arm.name, "seed": seed, **run_record(run_dir)}
            (records_dir / f"{arm.name}_seed{seed}.json").write_text(json.dumps(record))
            records[arm.name].append(record)
    return records


def run_record(run_dir: Path) -> dict:
    """A run's evaluations and per-step curves, the part of it that is committed."""
    folder = RunFolder(run_dir)
    evals, metrics = [e.to_json() for e in folder.evals()], folder.metrics()
    curves = {k: [m.get(k) for m in metrics] for k in ("step", *CURVE_METRICS)}
    return {"evals": evals, "curves": curves}


def welch(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean difference b - a, its standard error and Welch's t; `exceeds_noise` when |diff| > 2 SE."""
    diff = statistics.fmean(b) - statistics.fmean(a)
    var = (statistics.variance(a) / len(a) if len(a) > 1 else 0.0) + (
        statistics.variance(b) / len(b) if len(b) > 1 else 0.0)
    se = math.sqrt(var)
    return {"diff": diff, "se": se, "t": diff / se if se > 0 else math.nan,
            "exceeds_noise": bool(se > 0 and abs(diff) > 2 * se)}


def aggregate(study: Study, records: dict[str, list[dict]]) -> dict:
    """Final pass@k per arm (mean, std over seeds, per level) and each arm's difference from the first."""
    first = next(iter(records.values()))[0]["evals"]
    ks = [f"pass@{k}" for k in ks_for(first[-1]["samples"])]
    scopes = ["all", *first[-1]["per_level"]]

    def at(arm: str, scope: str, k: str, index: int) -> list[float]:  # one value per seed, from evals[index]
        evals = [r["evals"][index] for r in records[arm]]
        return [(e["overall"] if scope == "all" else e["per_level"][scope])[k] for e in evals]

    ref = study.arms[0].name
    # every arm starts from the same base policy, but each seed evaluates it with its own samples: the
    # spread of those step-0 evaluations is the evaluation's own sampling noise
    starts = {s: {k: at(ref, s, k, 0) for k in ks} for s in scopes}
    out: dict = {"question": study.question, "reference": ref, "ks": ks, "scopes": scopes,
                 "base": {s: {k: statistics.fmean(v) for k, v in starts[s].items()} for s in scopes},
                 "base_std": {s: {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in starts[s].items()}
                              for s in scopes},
                 "arms": {}}
    for arm in records:
        out["arms"][arm] = {}
        for scope in scopes:
            cells = {}
            for k in ks:
                vals = at(arm, scope, k, -1)
                cell = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                        "values": vals}
                if arm != ref:
                    cell["vs_reference"] = welch(at(ref, scope, k, -1), vals)
                cells[k] = cell
            out["arms"][arm][scope] = cells
    return out


def format_study_table(agg: dict, n_seeds: int) -> str:
    lines = [(f"pass@k in % after training (base: before, each seed's evaluation of the base policy), "
              f"mean +- std over {n_seeds} seeds; "
              f"[d +x.x*] = difference from {agg['reference']}, * when it exceeds 2 standard errors"), "",
             "| level | arm | " + " | ".join(agg["ks"]) + " |", "|---|---|" + "---|" * len(agg["ks"])]
    for scope in agg["scopes"]:
        lines.append(f"| {scope} | base | " + " | ".join(
            f"{100 * agg['base'][scope][k]:.1f} +- {100 * agg['base_std'][scope][k]:.1f}" for k in agg["ks"]) + " |")
        for arm, by_scope in agg["arms"].items():
            cells = []
            for k in agg["ks"]:
                c = by_scope[scope][k]
                text = f"{100 * c['mean']:.1f} +- {100 * c['std']:.1f}"
                if "vs_reference" in c:
                    w = c["vs_reference"]
                    text += f" [d {100 * w['diff']:+.1f}{'*' if w['exceeds_noise'] else ''}]"
                cells.append(text)
            lines.append(f"| {scope} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; known: {', '.join(STUDIES)}")
    return STUDIES[name]


def run_study(name: str, seeds: list[int] | None = None, config_path: str | None = None,
              extra: list[str] | None = None, runs_dir: str | Path | None = None,
              results_dir: str | Path | None = None) -> StudyResult:
    """Train every missing (arm, seed) of study `name`, then aggregate and plot all of them."""
    study = get_study(name)
    seeds, extra = list(seeds or study.seeds), list(extra or [])
    runs = Path(runs_dir or f"runs/study/{name}")
    results = Path(results_dir or f"results/study_{name}")
    records = train_arms(study, seeds, lambda arm, seed: arm_config(study, arm, seed, runs, config_path, extra),
                         results / "runs", search_root=runs.parent)
    command = f"lensrl study {name} --seeds {','.join(map(str, seeds))}" + "".join(f" {o}" for o in extra)
    result = write_report(study, seeds, records, results, command, "study")
    plot_overview(results.parent / "study_overview.png")
    return result


def write_report(study: Study, seeds: list[int], records: dict[str, list[dict]], out: Path, command: str,
                 stem: str) -> StudyResult:
    """`<stem>.json` (aggregate), `<stem>.md` (table) and `<stem>.png` (plots) in `out`."""
    agg = aggregate(study, records)
    table = format_study_table(agg, len(seeds))
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "seeds": seeds, **agg}, indent=2))
    (out / f"{stem}.md").write_text(f"{study.question}\n\n`{command}`\n\n{table}\n")
    plot_study(out / f"{stem}.png", study, agg, records)
    return StudyResult(out, table, agg)


def overview_rows(results_root: Path, k: str) -> list[dict]:
    """Every distinct arm of the studies under `results_root` (folders `study_<name>/study.json`):
    final overall `k` as mean and standard error over seeds. Arms that share their runs (`lens` of
    main is `normalized`, `G16` and `lens_alpha0.25`) are one row, named by all their names."""
    rows: list[dict] = []
    for name in STUDIES:
        path = results_root / f"study_{name}" / "study.json"
        if not path.exists():
            continue
        for arm, by_scope in json.loads(path.read_text())["arms"].items():
            cell = by_scope["all"][k]
            same = next((r for r in rows if r["values"] == cell["values"]), None)
            if same is not None:
                same["names"].append(f"{name}/{arm}")
                continue
            n = len(cell["values"])
            rows.append({"names": [f"{name}/{arm}"], "values": cell["values"], "mean": cell["mean"],
                         "se": cell["std"] / math.sqrt(n), "seeds": n})
    return rows


def plot_overview(path: Path) -> None:
    """Final overall pass@1 and pass@16 of every arm of every study, mean +- 2 standard errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, overview_rows(path.parent, k)) for k in ("pass@1", "pass@16")]
    if not panels[0][1]:
        return
    fig, axes = plt.subplots(1, 2, figsize=(16, 0.45 * len(panels[0][1]) + 1.6), sharey=True)
    for ax, (k, rows) in zip(axes, panels):
        ys = range(len(rows))[::-1]
        ax.errorbar([100 * r["mean"] for r in rows], ys, xerr=[200 * r["se"] for r in rows], fmt="o", capsize=3)
        reference = next((r for r in rows if "main/grpo" in r["names"]), None)
        if reference is not None:
            base = json.loads((path.parent / "study_main" / "study.json").read_text())["base"]["all"][k]
            ax.axvline(100 * base, color="black", ls=":", lw=1, label="base policy (main)")
            ax.axvline(100 * reference["mean"], color="gray", ls="--", lw=1, label="GRPO (main)")
            ax.legend(fontsize=8)
        ax.set(title=f"final {k}: mean +- 2 SE over seeds", xlabel=f"{k} (%)")
        ax.set_yticks(list(ys), [f"{', '.join(r['names'])} ({r['seeds']} seeds)" for r in rows], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_study(path: Path, study: Study, agg: dict, records: dict[str, list[dict]]) -> None:
    """pass@k by arm; pass@1 over training overall and on the two hardest levels; negative groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [s for s in agg["scopes"] if s != "all"][-2:]
    panels = ["all", *levels]
    fig, axes = plt.subplots(1, 2 + len(panels), figsize=(5 * (2 + len(panels)), 4.2))
    kv = [int(k.split("@")[1]) for k in agg["ks"]]
    ax = axes[0]
    ax.plot(kv, [100 * agg["base"]["all"][k] for k in agg["ks"]], "k--o", label="base")
    for arm in records:
        cells = agg["arms"][arm]["all"]
        ax.errorbar(kv, [100 * cells[k]["mean"] for k in agg["ks"]], yerr=[100 * cells[k]["std"] for k in agg["ks"]],
                    marker="o", capsize=3, label=arm)
    ax.set(xscale="log", xlabel="k", ylabel="pass@k (%)", title=f"{study.name}: pass@k after training")
    ax.set_xticks(kv, [str(k) for k in kv])
    ax.legend(fontsize=8)
    for ax, scope in zip(axes[1:], panels):
        for i, arm in enumerate(records):
            steps = [e["step"] for e in records[arm][0]["evals"]]
            runs = [[100 * (e["overall"] if scope == "all" else e["per_level"][scope])["pass@1"] for e in rec["evals"]]
                    for rec in records[arm]]
            mean, spread = _mean_and_std(runs)
            ax.plot(steps, mean, color=f"C{i}", marker=".", label=arm)
            ax.fill_between(steps, [m - d for m, d in zip(mean, spread)], [m + d for m, d in zip(mean, spread)],
                            color=f"C{i}", alpha=0.12)
        ax.set(xlabel="step", ylabel="pass@1 (%)",
               title=f"pass@1 over training: {'all levels' if scope == 'all' else 'level ' + scope} (mean +- std)")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for i, arm in enumerate(records):
        mean, _ = _mean_and_std([[100 * v for v in rec["curves"]["groups/negative"]] for rec in records[arm]])
        ax.plot(records[arm][0]["curves"]["step"], mean, color=f"C{i}", alpha=0.25)
        ax.plot(records[arm][0]["curves"]["step"], running_mean(mean, 5), color=f"C{i}", label=arm)
    ax.set(xlabel="step", ylabel="negative groups (%)",
           title="all-wrong groups (seed mean; bold: 5-step mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mean_and_std(runs: list[list[float]]) -> tuple[list[float], list[float]]:
    """Pointwise mean and std over runs (seeds) of equally long curves."""
    columns = list(zip(*runs))
    return ([statistics.fmean(c) for c in columns],
            [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns])

"""Studies: every arm of a comparison, over several seeds, resumable, with an aggregate and plots.

The studies themselves (arms, seeds, base config, folders) are defined in `lensrl.research.registry`.
`lensrl study NAME` trains each (arm, seed) into `runs/study/NAME/<arm>_seed<s>/` (a run whose
`summary.json` exists with the same resolved config, in this study's folder or another study's, is
reused, so an interrupted study resumes without redoing finished runs and studies share their
common arms) and writes the study's results folder (default `results/study_NAME/`):
`runs/<arm>_seed<s>.json` (its evaluations, per-step metrics and samples per step), `study.json`
(means, spreads and seed-paired differences against the first arm, `lensrl.research.stats`), `study.md`,
`study.png` and `study_curves.png` (pass@k against samples seen). `--report-only`
(`report_from_records`) rebuilds all but the records from the records alone. Arms differ only in
their overrides: the same base policy, the same data order and the same sampling seeds, so the
samples differ only through the policies, and seed s of one arm is paired with seed s of another.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lensrl.config import TrainConfig, apply_overrides, config_differences, load_config
from lensrl.evaluation.evaluate import ks_for
from lensrl.runs.checkpoint import latest_checkpoint
from lensrl.runs.lifecycle import LOCK, RunFolder, checkpoint_step
from lensrl.research.plots import running_mean
from lensrl.research.stats import paired_difference
from lensrl.research.registry import STUDIES, Arm, Study, get_study
from lensrl.training.trainer import train_or_resume

# logged only every few steps (None in a run's curves at the other steps, absent from older records)
DIAGNOSTICS = ("diag/cosine", "diag/rel_diff", "diag/negative_share")
CURVE_METRICS = ("reward", "groups/negative", "adv/negative_group_share", "response_len/mean", "entropy",
                 *DIAGNOSTICS)



@dataclass
class StudyResult:
    output_dir: Path
    table: str
    aggregate: dict = field(default_factory=dict)


def arm_config(study: Study, arm: Arm, seed: int, runs_dir: Path, config_path: str | None,
               extra: list[str]) -> TrainConfig:
    """The arm's resolved config: `config_path` (None: the study's `config`), the study's, the arm's
    and the extra overrides, the seed and the run folder; then `run.steps` times `arm.steps_factor`."""
    overrides = [*study.overrides, *arm.overrides, *extra, f"run.seed={seed}",
                 f"run.output_dir={runs_dir / f'{arm.name}_seed{seed}'}"]
    config = load_config(config_path if config_path is not None else study.config, overrides)
    if arm.steps_factor != 1:
        config = apply_overrides(config, [f"run.steps={arm.steps_factor * config.run.steps}"])
    return config


def samples_per_step(config: TrainConfig) -> int:
    """Samples drawn per training step: questions per step x group size."""
    return config.rollout.questions_per_step * config.rollout.group_size


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


def extend_shorter_run(config: TrainConfig, search_root: Path) -> Path | None:
    """Start this run from a finished run of the same config with fewer steps, when its own folder has no
    checkpoint yet: that run's folder is copied in (its summary left out) and training goes on from its
    last checkpoint. The learning rate is constant after warm-up and nothing else depends on run.steps,
    so the extended run is the run trained from scratch (`tests/integration/test_study.py` checks it),
    provided the shorter run's final evaluation is one the longer run makes too (run.eval_every divides
    its steps); otherwise nothing is reused.
    """
    own, every = Path(config.run.output_dir), config.run.eval_every
    if latest_checkpoint(own) is not None or every == 0:
        return None
    for summary in sorted(search_root.glob("*/*/summary.json")):
        folder = summary.parent
        done = checkpoint_step(latest_checkpoint(folder))
        if config_differences(folder, config) == ["run.steps"] and done < config.run.steps and done % every == 0:
            shutil.copytree(folder, own, dirs_exist_ok=True, ignore=shutil.ignore_patterns(LOCK, "summary.json"))
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
                if search_root is not None:
                    extend_shorter_run(config, search_root)
                run_dir = train_or_resume(config).output_dir
            record = {"arm": arm.name, "seed": seed, **run_record(run_dir)}
            (records_dir / f"{arm.name}_seed{seed}.json").write_text(json.dumps(record))
            records[arm.name].append(record)
    return records


def run_record(run_dir: Path) -> dict:
    """A run's evaluations, per-step curves and samples per step, the part of it that is committed.
    A curve holds None at the steps that do not log its key (the diagnostics, every few steps)."""
    folder = RunFolder(run_dir)
    evals, metrics = [e.to_json() for e in folder.evals()], folder.metrics()
    curves = {k: [m.get(k) for m in metrics] for k in ("step", *CURVE_METRICS)}
    return {"evals": evals, "curves": curves, "samples_per_step": samples_per_step(folder.config())}


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _diagnostics(records: dict[str, list[dict]]) -> dict[str, dict[str, float | None]]:
    """Per arm and diagnostic key: the mean over seeds of each run's mean over the steps that log it
    (None where no run of the arm logs it); {} when no run logs any."""
    out: dict[str, dict[str, float | None]] = {}
    for arm, runs in records.items():
        out[arm] = {}
        for key in DIAGNOSTICS:
            run_means = [statistics.fmean(v) for r in runs if (v := _finite(r["curves"].get(key, [])))]
            out[arm][key] = statistics.fmean(run_means) if run_means else None
    return out if any(v is not None for by_key in out.values() for v in by_key.values()) else {}


def aggregate(study: Study, records: dict[str, list[dict]]) -> dict:
    """Final pass@k per arm (mean, std over seeds, per level) and each arm's seed-paired difference
    from the first (`vs_reference`: `lensrl.research.stats.PairedDifference`, over the seeds both arms have);
    `diagnostics` per arm when the runs log them."""
    first = next(iter(records.values()))[0]["evals"]
    ks = [f"pass@{k}" for k in ks_for(first[-1]["samples"])]
    scopes = ["all", *first[-1]["per_level"]]

    def at(arm: str, scope: str, k: str, index: int) -> dict[int, float]:  # by seed, from evals[index]
        return {r["seed"]: (r["evals"][index]["overall"] if scope == "all"
                            else r["evals"][index]["per_level"][scope])[k] for r in records[arm]}

    ref = study.arms[0].name
    # every arm starts from the same base policy, but each seed evaluates it with its own samples: the
    # spread of those step-0 evaluations is the evaluation's own sampling noise
    starts = {s: {k: list(at(ref, s, k, 0).values()) for k in ks} for s in scopes}
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
                by_seed = at(arm, scope, k, -1)
                vals = list(by_seed.values())
                cell = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                        "values": vals}
                reference = at(ref, scope, k, -1)
                shared = [s for s in by_seed if s in reference]
                if arm != ref and shared:
                    cell["vs_reference"] = paired_difference([reference[s] for s in shared],
                                                             [by_seed[s] for s in shared]).to_json()
                cells[k] = cell
            out["arms"][arm][scope] = cells
    diagnostics = _diagnostics(records)
    if diagnostics:
        out["diagnostics"] = diagnostics
    return out


def _points(value: float | None, sign: bool = True) -> str:
    """A fraction as percentage points with one decimal; n/a for a missing value."""
    return "n/a" if value is None else f"{100 * value:{'+' if sign else ''}.1f}"


def _difference_cell(w: dict) -> str:
    ci = "" if w["ci_low"] is None else f" ({_points(w['ci_low'])}, {_points(w['ci_high'])})"
    return f" [d {_points(w['diff'])}{'*' if w['significant'] else ''}{ci}]"


def format_study_table(agg: dict, n_seeds: int) -> str:
    """The pass@k table, a line per compared arm with its minimal detectable differences, and the
    diagnostics table when the runs log them."""
    ks = agg["ks"]
    lines = [(f"pass@k in % after training (base: before, each seed's evaluation of the base policy), "
              f"mean +- std over {n_seeds} seeds; [d +x.x (lo, hi)] = seed-paired difference from "
              f"{agg['reference']} (mean over the seeds both have of arm - {agg['reference']}) and its 95% "
              f"Student t interval, * when the interval excludes 0"), "",
             "| level | arm | " + " | ".join(ks) + " |", "|---|---|" + "---|" * len(ks)]
    for scope in agg["scopes"]:
        lines.append(f"| {scope} | base | " + " | ".join(
            f"{100 * agg['base'][scope][k]:.1f} +- {100 * agg['base_std'][scope][k]:.1f}" for k in ks) + " |")
        for arm, by_scope in agg["arms"].items():
            cells = []
            for k in ks:
                c = by_scope[scope][k]
                text = f"{100 * c['mean']:.1f} +- {100 * c['std']:.1f}"
                cells.append(text + (_difference_cell(c["vs_reference"]) if "vs_reference" in c else ""))
            lines.append(f"| {scope} | {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Minimal detectable difference (80% power, two-sided 5%, from the sd of the seed-paired "
                  "differences), overall, in points:"]
    for arm, by_scope in agg["arms"].items():
        overall = by_scope["all"]
        if "vs_reference" in overall[ks[0]]:
            mdes = ", ".join(f"{k} {_points(overall[k]['vs_reference']['mde'], sign=False)}" for k in (ks[0], ks[-1]))
            lines.append(f"- {arm} vs {agg['reference']} (n = {overall[ks[0]]['vs_reference']['n']}): {mdes}")
    if "diagnostics" in agg:
        keys = list(next(iter(agg["diagnostics"].values())))
        lines += ["", "Diagnostics: mean over seeds of each run's mean over the steps that log them", "",
                  "| arm | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for arm, by_key in agg["diagnostics"].items():
            lines.append(f"| {arm} | " + " | ".join("-" if by_key[key] is None else f"{by_key[key]:.4g}"
                                                     for key in keys) + " |")
    return "\n".join(lines)


def _command(name: str, seeds: list[int], config_path: str | None, extra: list[str]) -> str:
    config = f" --config {config_path}" if config_path is not None else ""
    return f"lensrl study {name} --seeds {','.join(map(str, seeds))}{config}" + "".join(f" {o}" for o in extra)


def run_study(name: str, seeds: list[int] | None = None, config_path: str | None = None,
              extra: list[str] | None = None, runs_dir: str | Path | None = None,
              results_dir: str | Path | None = None) -> StudyResult:
    """Train every missing (arm, seed) of study `name`, then aggregate and plot all of them.
    `config_path` (--config) replaces the study's own base config."""
    study = get_study(name)
    seeds, extra = list(seeds or study.seeds), list(extra or [])
    runs = Path(runs_dir or f"runs/study/{name}")
    results = Path(results_dir or study.results_dir)
    records = train_arms(study, seeds, lambda arm, seed: arm_config(study, arm, seed, runs, config_path, extra),
                         results / "runs", search_root=runs.parent)
    return _report(study, seeds, records, results, _command(name, seeds, config_path, extra))


def report_from_records(name: str, seeds: list[int] | None = None, config_path: str | None = None,
                        extra: list[str] | None = None, results_dir: str | Path | None = None) -> StudyResult:
    """Rebuild a study's report from its committed run records alone (`load_records`), without run
    folders and without training (`lensrl study NAME --report-only`). The report's command is the
    study's own, the one that made the records."""
    study = get_study(name)
    seeds, extra = list(seeds or study.seeds), list(extra or [])
    results = Path(results_dir or study.results_dir)
    records = load_records(study, seeds, results / "runs", config_path, extra)
    return _report(study, seeds, records, results, _command(name, seeds, config_path, extra))


def load_records(study: Study, seeds: list[int], records_dir: Path, config_path: str | None = None,
                 extra: list[str] | None = None) -> dict[str, list[dict]]:
    """The run records `records_dir/<arm>_seed<s>.json` by arm, in seed order (as `train_arms` returns
    them). Records written before they held `samples_per_step` get it from the arm's resolved config
    (give the `config_path` and overrides the study was run with). A missing record is an error
    naming every one missing."""
    records: dict[str, list[dict]] = {arm.name: [] for arm in study.arms}
    missing = []
    for seed in seeds:
        for arm in study.arms:
            path = records_dir / f"{arm.name}_seed{seed}.json"
            if not path.exists():
                missing.append(str(path))
                continue
            record = json.loads(path.read_text())
            if "samples_per_step" not in record:
                config = arm_config(study, arm, seed, Path(f"runs/study/{study.name}"), config_path, list(extra or []))
                record["samples_per_step"] = samples_per_step(config)
            records[arm.name].append(record)
    if missing:
        raise ValueError(f"study {study.name}: no run record {', '.join(missing)}; `lensrl study {study.name}` "
                         "without --report-only trains the missing runs")
    return records


def _report(study: Study, seeds: list[int], records: dict[str, list[dict]], results: Path,
            command: str) -> StudyResult:
    result = write_report(study, seeds, records, results, command, "study")
    plot_overview(results.parent / "study_overview.png")
    return result


def write_report(study: Study, seeds: list[int], records: dict[str, list[dict]], out: Path, command: str,
                 stem: str) -> StudyResult:
    """`<stem>.json` (aggregate), `<stem>.md` (table), `<stem>.png` (plots) and `<stem>_curves.png`
    (pass@k against samples seen) in `out`."""
    agg = aggregate(study, records)
    table = format_study_table(agg, len(seeds))
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "seeds": seeds, **agg}, indent=2))
    (out / f"{stem}.md").write_text(f"{study.question}\n\n`{command}`\n\n{table}\n")
    plot_study(out / f"{stem}.png", study, agg, records)
    plot_curves(out / f"{stem}_curves.png", study, agg, records)
    return StudyResult(out, table, agg)


def _overview_studies(results_root: Path) -> list[tuple[str, dict]]:
    """(name, study.json) of every registered study whose results folder is under `results_root` by
    its default folder's name (results/study_<name>, results/signs/<short>), in registry order."""
    found = []
    for name, study in STUDIES.items():
        path = results_root / study.results_dir.name / "study.json"
        if path.exists():
            found.append((name, json.loads(path.read_text())))
    return found


def overview_rows(results_root: Path, k: str) -> list[dict]:
    """Every distinct arm of the studies under `results_root` (`_overview_studies`): final overall
    `k` as mean and standard error over seeds. Arms that share their runs (`lens` of main is
    `normalized`, `G16` and `lens_alpha0.25`) are one row, named by all their names."""
    rows: list[dict] = []
    for name, data in _overview_studies(results_root):
        for arm, by_scope in data["arms"].items():
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
    """Final overall pass@1 and pass@16 (the first and last k) of every arm of every study under
    `path`'s folder, mean +- 2 standard errors; lines: the first study's base policy and reference arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = _overview_studies(path.parent)
    if not studies:
        return
    first, data = studies[0]
    reference_arm = next(iter(data["arms"]))
    ks = list(data["arms"][reference_arm]["all"])
    panels = [(k, overview_rows(path.parent, k)) for k in (ks[0], ks[-1])]
    fig, axes = plt.subplots(1, 2, figsize=(16, 0.45 * len(panels[0][1]) + 1.6), sharey=True)
    for ax, (k, rows) in zip(axes, panels):
        ys = range(len(rows))[::-1]
        ax.errorbar([100 * r["mean"] for r in rows], ys, xerr=[200 * r["se"] for r in rows], fmt="o", capsize=3)
        reference = next(r for r in rows if f"{first}/{reference_arm}" in r["names"])
        ax.axvline(100 * data["base"]["all"][k], color="black", ls=":", lw=1, label=f"base policy ({first})")
        ax.axvline(100 * reference["mean"], color="gray", ls="--", lw=1, label=f"{reference_arm} ({first})")
        ax.legend(fontsize=8)
        ax.set(title=f"final {k}: mean +- 2 SE over seeds", xlabel=f"{k} (%)")
        ax.set_yticks(list(ys), [f"{', '.join(r['names'])} ({r['seeds']} seeds)" for r in rows], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scope_title(scope: str) -> str:
    return "all levels" if scope == "all" else f"level {scope}"


def _passk_runs(runs: list[dict], scope: str, k: str) -> list[list[float]]:
    """Each run's `k` in % at every evaluation, on `scope`."""
    return [[100 * (e["overall"] if scope == "all" else e["per_level"][scope])[k] for e in run["evals"]]
            for run in runs]


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
            mean, spread = _mean_and_std(_passk_runs(records[arm], scope, "pass@1"))
            _band(ax, steps, mean, spread, f"C{i}", arm)
        ax.set(xlabel="step", ylabel="pass@1 (%)", title=f"pass@1 over training: {_scope_title(scope)} (mean +- std)")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for i, arm in enumerate(records):
        mean, _ = _mean_and_std([[None if v is None else 100 * v for v in rec["curves"]["groups/negative"]]
                                 for rec in records[arm]])
        ax.plot(records[arm][0]["curves"]["step"], mean, color=f"C{i}", alpha=0.25)
        ax.plot(records[arm][0]["curves"]["step"], running_mean(mean, 5), color=f"C{i}", label=arm)
    ax.set(xlabel="step", ylabel="negative groups (%)",
           title="all-wrong groups (seed mean; bold: 5-step mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: Path, study: Study, agg: dict, records: dict[str, list[dict]]) -> None:
    """The first and the last pass@k (pass@1, pass@16) against samples seen (step x questions per step
    x group size, from each record's `samples_per_step`): one column per scope (overall and each
    level), one colour per arm, the seed mean with a band of +- std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks, scopes = [agg["ks"][0], agg["ks"][-1]], agg["scopes"]
    fig, axes = plt.subplots(len(ks), len(scopes), figsize=(4 * len(scopes), 3.4 * len(ks)), squeeze=False)
    for row, k in zip(axes, ks):
        for ax, scope in zip(row, scopes):
            for i, (arm, runs) in enumerate(records.items()):
                seen = [e["step"] * runs[0]["samples_per_step"] for e in runs[0]["evals"]]
                mean, spread = _mean_and_std(_passk_runs(runs, scope, k))
                _band(ax, seen[:len(mean)], mean, spread, f"C{i}", arm)
            ax.set(xlabel="samples seen", ylabel=f"{k} (%)", title=f"{k}: {_scope_title(scope)}")
            ax.grid(alpha=0.25)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{study.name}: pass@k against samples seen (step x questions per step x group size); "
                 f"seed mean, band: +- std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _band(ax, xs: list[float], mean: list[float], spread: list[float], color: str, label: str) -> None:
    """A mean line with a shaded band of +- `spread`."""
    ax.plot(xs, mean, color=color, marker=".", label=label)
    ax.fill_between(xs, [m - d for m, d in zip(mean, spread)], [m + d for m, d in zip(mean, spread)],
                    color=color, alpha=0.12)


def _mean_and_std(runs: list[list[float | None]]) -> tuple[list[float], list[float]]:
    """Pointwise mean and std over runs (seeds) of equally long curves, skipping None and NaN (nan
    where no run has a value; std 0 where one has)."""
    means, stds = [], []
    for column in zip(*runs):
        values = _finite(list(column))
        means.append(statistics.fmean(values) if values else math.nan)
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return means, stds

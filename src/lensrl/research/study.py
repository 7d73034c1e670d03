"""Studies: every arm of a comparison, over several seeds, resumable, with an aggregate and plots.

A study (`lensrl.research.arms.Study`: arms, seeds, base config, folders) is defined in a studies
file (this repository's: experiments/studies.py). `lensrl study NAME` trains each (arm, seed) into
`runs/study/NAME/<arm>_seed<s>/` (a run whose `summary.json` exists with the same resolved config, in
this study's folder or another study's, is reused, so an interrupted study resumes without redoing
finished runs and studies share their common arms) and writes the study's results folder (default
`Study.results_dir`): `runs/<arm>_seed<s>.json` (a `RunRecord`: its evaluations, per-step metrics
and samples per step), `study.json` (means, spreads and seed-paired differences against the first
arm, `lensrl.research.stats`), `study.md`, and the figures of `lensrl.research.plots`: `study.png`,
`study_curves.png` (pass@k against the samples generated, or with `--x tokens` the response tokens)
and, one folder up, `study_overview.png` (every study whose results folder is beside it, of those it
is run with). The final pass@k of a run is its last evaluation, wherever it ended: arms given equal
budgets (`run.max_tokens=...` or `run.max_samples=...` with a large `run.steps`) end at different
steps, and study.json and study.md then also give each arm's mean compute at its final evaluation
(`final_compute`; not for records of runs from before compute accounting). `--report-only`
(`report_from_records`) rebuilds all but the records from the records alone. Arms differ only in
their overrides: the same base policy, the same data order and the same sampling seeds, so the
samples differ only through the policies, and seed s of one arm is paired with seed s of another.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import torch

from lensrl.config import RolloutConfig, TrainConfig, apply_overrides, config_differences, load_config, tree_differences
from lensrl.evaluation.evaluate import ks_for
from lensrl.research.arms import Arm, Study
from lensrl.research.plots import finite, plot_curves, plot_overview, plot_study
from lensrl.research.records import CURVE_METRICS, DIAGNOSTICS, RunRecord
from lensrl.research.stats import PairedDifference, paired_difference
from lensrl.runs.checkpoint import latest_checkpoint
from lensrl.runs.lifecycle import LOCK, RunFolder, checkpoint_step
from lensrl.training.trainer import train_or_resume


@dataclass
class StudyResult:
    output_dir: Path
    table: str
    aggregate: dict = field(default_factory=dict)


def arm_config(
    study: Study, arm: Arm, seed: int, runs_dir: Path, config_path: str | None, extra: list[str]
) -> TrainConfig:
    """The arm's resolved config: `config_path` (None: the study's `config`), the study's, the arm's
    and the extra overrides, the seed and the run folder; then `run.steps` times `arm.steps_factor`."""
    overrides = [
        *study.overrides,
        *arm.overrides,
        *extra,
        f"run.seed={seed}",
        f"run.output_dir={runs_dir / f'{arm.name}_seed{seed}'}",
    ]
    config = load_config(config_path if config_path is not None else study.config, overrides)
    if arm.steps_factor != 1:
        config = apply_overrides(config, [f"run.steps={arm.steps_factor * config.run.steps}"])
    return config


def samples_per_step(rollout: RolloutConfig) -> int:
    """Samples drawn per training step: questions per step x group size."""
    return rollout.questions_per_step * rollout.group_size


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


def train_arms(
    study: Study,
    seeds: list[int],
    config_of: Callable[[Arm, int], TrainConfig],
    records_dir: Path,
    search_root: Path | None = None,
    jobs: int = 1,
) -> dict[str, list[RunRecord]]:
    """Train every (arm, seed) that has no finished run yet, arm by arm (all seeds of an arm before the
    next, so that whatever is finished is a whole arm), `jobs` runs at a time; each run's record
    (`run_record`) is written to `records_dir/<arm>_seed<s>.json` as soon as the run finishes (an
    interrupted study keeps the records of its finished runs), and returned by arm, in seed order.
    A record already there that holds the same resolved config (`reusable_record`) stands for its
    finished run, so a study whose run folders are gone (another machine, a fresh clone) trains only
    what its committed records lack; to train everything again, give another `records_dir`.

    With jobs > 1 the runs go to `jobs` worker processes with cpu_count // jobs threads each (two runs
    with one thread each finish sooner than one after the other with two, on a 2-core CPU), a new
    process for each run; a run computes the same numbers whichever process trains it.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    records_dir.mkdir(parents=True, exist_ok=True)
    configs = {(arm.name, seed): config_of(arm, seed) for arm in study.arms for seed in seeds}
    kept = {key: r for key, config in configs.items() if (r := reusable_record(records_dir, *key, config)) is not None}
    configs = {key: config for key, config in configs.items() if key not in kept}

    def keep(key: tuple[str, int], run_dir: Path) -> None:  # as soon as a run finishes
        kept[key] = record = run_record(run_dir, *key)
        (records_dir / f"{key[0]}_seed{key[1]}.json").write_text(json.dumps(record.to_json()))

    if jobs == 1:
        for key, config in configs.items():
            keep(key, train_one(config, search_root))
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        # a fresh process per run: a worker's resident memory grows from run to run, and a worker that
        # outlives a broken pool (its stop signal is caught as a graceful stop) takes no further run
        with ProcessPoolExecutor(
            jobs,
            mp_context=get_context("spawn"),
            initializer=torch.set_num_threads,
            initargs=(threads,),
            max_tasks_per_child=1,
        ) as pool:
            futures = {pool.submit(train_one, config, search_root): key for key, config in configs.items()}
            for future in as_completed(futures):
                keep(futures[future], future.result())
    return {arm.name: [kept[arm.name, seed] for seed in seeds] for arm in study.arms}


def reusable_record(records_dir: Path, arm: str, seed: int, config: TrainConfig) -> RunRecord | None:
    """The record `records_dir/<arm>_seed<s>.json` when it holds a config that is `config` up to
    bookkeeping (`config.tree_differences`), else None (no record, or one of another config)."""
    path = records_dir / f"{arm}_seed{seed}.json"
    if not path.exists():
        return None
    record = RunRecord.from_json(json.loads(path.read_text()))
    return record if tree_differences(record.config, config) == [] else None


def train_one(config: TrainConfig, search_root: Path | None = None) -> Path:
    """The folder of a finished run of `config`: one found (`finished_run`), else one trained now,
    from a shorter run of the same config where there is one (`extend_shorter_run`)."""
    run_dir = finished_run(config, search_root)
    if run_dir is None:
        if search_root is not None:
            extend_shorter_run(config, search_root)
        run_dir = train_or_resume(config).output_dir
    return Path(run_dir)


def run_record(run_dir: Path, arm: str, seed: int) -> RunRecord:
    """The record of the finished run in `run_dir`, as arm `arm` and seed `seed` of a study."""
    folder = RunFolder(run_dir)
    metrics, config = folder.metrics(), folder.config()
    curves = {k: [m.get(k) for m in metrics] for k in ("step", *CURVE_METRICS)}
    return RunRecord(arm, seed, folder.evals(), curves, samples_per_step(config.rollout), config.model_dump())


def _diagnostics(records: dict[str, list[RunRecord]]) -> dict[str, dict[str, float | None]]:
    """Per arm and diagnostic key: the mean over seeds of each run's mean over the steps that log it
    (None where no run of the arm logs it); {} when no run logs any."""
    out: dict[str, dict[str, float | None]] = {}
    for arm, runs in records.items():
        out[arm] = {}
        for key in DIAGNOSTICS:
            run_means = [statistics.fmean(v) for r in runs if (v := finite(r.curves.get(key, [])))]
            out[arm][key] = statistics.fmean(run_means) if run_means else None
    return out if any(v is not None for by_key in out.values() for v in by_key.values()) else {}


def final_compute(records: dict[str, list[RunRecord]]) -> dict[str, dict[str, float | None]]:
    """Per arm, the mean over seeds of each run's step, generated samples and tokens at its final (last)
    evaluation (`RunRecord.samples_at`, `tokens_at`; tokens None where a run has no token counts); {}
    when no run records its compute (`RunRecord.has_tokens`: runs from before compute accounting)."""
    if not any(r.has_tokens for runs in records.values() for r in runs):
        return {}
    out: dict[str, dict[str, float | None]] = {}
    for arm, runs in records.items():
        steps = [r.evals[-1].step for r in runs]
        tokens = [r.tokens_at(step) for r, step in zip(runs, steps)]
        out[arm] = {
            "step": statistics.fmean(steps),
            "samples": statistics.fmean(r.samples_at(step) for r, step in zip(runs, steps)),
            "tokens": None if None in tokens else statistics.fmean(tokens),
        }
    return out


def aggregate(study: Study, records: dict[str, list[RunRecord]]) -> dict:
    """Final pass@k per arm (mean, std over seeds, per level; each run's last evaluation, wherever it
    ended) and each arm's seed-paired difference from the first (`vs_reference`:
    `lensrl.research.stats.PairedDifference`, over the seeds both arms have); `compute` per arm when
    the runs record it (`final_compute`), `diagnostics` per arm when the runs log them. Keyed by scope
    ("all", then the levels) and by the name of each k ("pass@1", ...)."""
    last = next(iter(records.values()))[0].evals[-1]
    ks = {f"pass@{k}": k for k in ks_for(last.samples)}
    scopes = last.scopes

    def at(arm: str, scope: str, k: str, index: int) -> dict[int, float]:  # by seed, from evals[index]
        by_seed = {r.seed: r.evals[index].pass_at(scope, ks[k]) for r in records[arm]}
        bad = [
            (r.seed, r.evals[index].step, by_seed[r.seed]) for r in records[arm] if not math.isfinite(by_seed[r.seed])
        ]
        if bad:  # a failed run or evaluation: named, not averaged over or dropped
            where = ", ".join(f"seed {seed} (evaluation at step {step}): {v!r}" for seed, step, v in bad)
            raise ValueError(
                f"study {study.name}: arm {arm!r}, level {scope!r}, {k} is not finite in {where}; "
                "fix or rerun those runs"
            )
        return by_seed

    ref = study.arms[0].name
    # every arm starts from the same base policy, but each seed evaluates it with its own samples: the
    # spread of those step-0 evaluations is the evaluation's own sampling noise
    starts = {s: {k: list(at(ref, s, k, 0).values()) for k in ks} for s in scopes}
    out: dict = {
        "question": study.question,
        "reference": ref,
        "ks": list(ks),
        "scopes": scopes,
        "base": {s: {k: statistics.fmean(v) for k, v in starts[s].items()} for s in scopes},
        "base_std": {s: {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in starts[s].items()} for s in scopes},
        "arms": {},
    }
    for arm in records:
        out["arms"][arm] = {}
        for scope in scopes:
            cells = {}
            for k in ks:
                by_seed = at(arm, scope, k, -1)
                vals = list(by_seed.values())
                cell = {
                    "mean": statistics.fmean(vals),
                    "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                    "values": vals,
                }
                reference = at(ref, scope, k, -1)
                shared = [s for s in by_seed if s in reference]
                if arm != ref and shared:
                    cell["vs_reference"] = paired_difference(
                        [reference[s] for s in shared], [by_seed[s] for s in shared]
                    ).to_json()
                cells[k] = cell
            out["arms"][arm][scope] = cells
    compute = final_compute(records)
    if compute:
        out["compute"] = compute
    diagnostics = _diagnostics(records)
    if diagnostics:
        out["diagnostics"] = diagnostics
    return out


def _points(value: float | None, sign: bool = True) -> str:
    """A fraction as percentage points with one decimal; n/a for a missing value."""
    return "n/a" if value is None else f"{100 * value:{'+' if sign else ''}.1f}"


def _constant_points(value: float) -> str:
    """A difference the same in every seed, in points: no interval gives its scale, so 4 significant
    digits (+0.0125), at least one decimal (+3.0)."""
    text = f"{100 * value:+.4g}"
    return text if "." in text or "e" in text else f"{text}.0"


def _difference_cell(w: dict) -> str:
    """A `vs_reference` cell: the difference and its interval, or, when every seed moved by the same
    amount, that amount and the exact p."""
    if PairedDifference.from_json(w).identical:
        return " [identical in every seed]"
    if w["constant"]:
        return f" [d {_constant_points(w['diff'])} in every seed, exact p {w['p_exact']:.3g}]"
    ci = "" if w["ci_low"] is None else f" ({_points(w['ci_low'])}, {_points(w['ci_high'])})"
    return f" [d {_points(w['diff'])}{'*' if w['significant'] else ''}{ci}]"


def _mde(w: dict) -> str:
    return "n/a (no spread)" if w["constant"] else _points(w["mde"], sign=False)


def _amount(value: float | None) -> str:
    """A mean count: thousands separated, one decimal only where it has one; n/a for a missing one."""
    return "n/a" if value is None else f"{value:,.1f}".removesuffix(".0")


def format_study_table(agg: dict, n_seeds: int) -> str:
    """The pass@k table, a line per compared arm with its minimal detectable differences, and the
    diagnostics table when the runs log them."""
    ks = agg["ks"]
    lines = [
        (
            f"pass@k in % after training (base: before, each seed's evaluation of the base policy), "
            f"mean +- std over {n_seeds} seeds; [d +x.x (lo, hi)] = seed-paired difference from "
            f"{agg['reference']} (mean over the seeds both have of arm - {agg['reference']}) and its 95% "
            f"Student t interval, * when the interval excludes 0; [d +x in every seed, exact p] = every seed "
            "differs by the same x (no spread, so no interval), with the exact sign-flip p (at least 2 / 2^n); "
            "[identical in every seed] = the same value in both arms in every seed"
        ),
        "",
        "| level | arm | " + " | ".join(ks) + " |",
        "|---|---|" + "---|" * len(ks),
    ]
    for scope in agg["scopes"]:
        lines.append(
            f"| {scope} | base | "
            + " | ".join(f"{100 * agg['base'][scope][k]:.1f} +- {100 * agg['base_std'][scope][k]:.1f}" for k in ks)
            + " |"
        )
        for arm, by_scope in agg["arms"].items():
            cells = []
            for k in ks:
                c = by_scope[scope][k]
                text = f"{100 * c['mean']:.1f} +- {100 * c['std']:.1f}"
                cells.append(text + (_difference_cell(c["vs_reference"]) if "vs_reference" in c else ""))
            lines.append(f"| {scope} | {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Minimal detectable difference (80% power, two-sided 5%, from the sd of the seed-paired "
        "differences), overall, in points:",
    ]
    for arm, by_scope in agg["arms"].items():
        overall = by_scope["all"]
        if "vs_reference" in overall[ks[0]]:
            mdes = ", ".join(f"{k} {_mde(overall[k]['vs_reference'])}" for k in (ks[0], ks[-1]))
            lines.append(f"- {arm} vs {agg['reference']} (n = {overall[ks[0]]['vs_reference']['n']}): {mdes}")
    if "compute" in agg:
        lines += [
            "",
            "Compute at the final evaluation: mean over seeds of the step and of the samples and response "
            "tokens generated since step 1 (n/a: not recorded)",
            "",
            "| arm | step | samples | tokens |",
            "|---|---|---|---|",
        ]
        for arm, c in agg["compute"].items():
            lines.append(f"| {arm} | {_amount(c['step'])} | {_amount(c['samples'])} | {_amount(c['tokens'])} |")
    if "diagnostics" in agg:
        keys = list(next(iter(agg["diagnostics"].values())))
        lines += [
            "",
            "Diagnostics: mean over seeds of each run's mean over the steps that log them",
            "",
            "| arm | " + " | ".join(keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for arm, by_key in agg["diagnostics"].items():
            lines.append(
                f"| {arm} | " + " | ".join("-" if by_key[key] is None else f"{by_key[key]:.4g}" for key in keys) + " |"
            )
    return "\n".join(lines)


def _command(name: str, seeds: list[int], config_path: str | None, extra: list[str], x: str = "samples") -> str:
    config = f" --config {config_path}" if config_path is not None else ""
    axis = f" --x {x}" if x != "samples" else ""
    return f"lensrl study {name} --seeds {','.join(map(str, seeds))}{config}{axis}" + "".join(f" {o}" for o in extra)


def run_study(
    study: Study,
    seeds: list[int] | None = None,
    config_path: str | None = None,
    extra: list[str] | None = None,
    runs_dir: str | Path | None = None,
    results_dir: str | Path | None = None,
    jobs: int = 1,
    studies: Iterable[Study] = (),
    x: str = "samples",
) -> StudyResult:
    """Train every missing (arm, seed) of `study`, `jobs` at a time, then aggregate and plot all of
    them. `config_path` (--config) replaces the study's own base config. `studies` are the studies
    drawn with it in the overview beside its results folder (`write_overview`; default: it alone);
    `x` is the x axis of study_curves.png (`plot_curves`: samples, tokens or step)."""
    seeds, extra = list(seeds or study.seeds), list(extra or [])
    runs = Path(runs_dir or f"runs/study/{study.name}")
    results = Path(results_dir or study.results_dir)
    records = train_arms(
        study,
        seeds,
        lambda arm, seed: arm_config(study, arm, seed, runs, config_path, extra),
        results / "runs",
        search_root=runs.parent,
        jobs=jobs,
    )
    command = _command(study.name, seeds, config_path, extra, x)
    return _report(study, seeds, records, results, command, studies=studies, x=x)


def report_from_records(
    study: Study,
    seeds: list[int] | None = None,
    config_path: str | None = None,
    extra: list[str] | None = None,
    results_dir: str | Path | None = None,
    figures: bool = True,
    studies: Iterable[Study] = (),
    x: str = "samples",
) -> StudyResult:
    """Rebuild a study's report from its committed run records alone (`load_records`), without run
    folders and without training (`lensrl study NAME --report-only`). The report's command is the
    study's own, the one that made the records. `figures=False` writes study.json and study.md only;
    `studies` and `x` as in `run_study`."""
    seeds, extra = list(seeds or study.seeds), list(extra or [])
    results = Path(results_dir or study.results_dir)
    records = load_records(study, seeds, results / "runs")
    command = _command(study.name, seeds, config_path, extra, x)
    return _report(study, seeds, records, results, command, figures, studies, x)


def load_records(study: Study, seeds: list[int], records_dir: Path) -> dict[str, list[RunRecord]]:
    """The run records `records_dir/<arm>_seed<s>.json` by arm, in seed order (as `train_arms` returns
    them). A missing record is an error naming every one missing."""
    records: dict[str, list[RunRecord]] = {arm.name: [] for arm in study.arms}
    missing = []
    for seed in seeds:
        for arm in study.arms:
            path = records_dir / f"{arm.name}_seed{seed}.json"
            if not path.exists():
                missing.append(str(path))
                continue
            records[arm.name].append(RunRecord.from_json(json.loads(path.read_text())))
    if missing:
        raise ValueError(
            f"study {study.name}: no run record {', '.join(missing)}; `lensrl study {study.name}` "
            "without --report-only trains the missing runs"
        )
    return records


def _report(
    study: Study,
    seeds: list[int],
    records: dict[str, list[RunRecord]],
    results: Path,
    command: str,
    figures: bool = True,
    studies: Iterable[Study] = (),
    x: str = "samples",
) -> StudyResult:
    result = write_report(study, seeds, records, results, command, "study", figures, x)
    if figures:
        write_overview(results.parent, study, studies)
    return result


def write_report(
    study: Study,
    seeds: list[int],
    records: dict[str, list[RunRecord]],
    out: Path,
    command: str,
    stem: str,
    figures: bool = True,
    x: str = "samples",
) -> StudyResult:
    """`<stem>.json` (aggregate), `<stem>.md` (table) and, with `figures`, `<stem>.png` (plots) and
    `<stem>_curves.png` (pass@k against the samples generated, `x` "tokens": the tokens, "step": the
    steps; `plot_curves`) in `out`."""
    if x not in ("step", "samples", "tokens"):
        raise ValueError(f"unknown x axis {x!r}: step, samples or tokens")
    agg = aggregate(study, records)
    table = format_study_table(agg, len(seeds))
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "seeds": seeds, **agg}, indent=2))
    (out / f"{stem}.md").write_text(f"{study.question}\n\n`{command}`\n\n{table}\n")
    if figures:
        plot_study(out / f"{stem}.png", study.name, agg, records)
        plot_curves(out / f"{stem}_curves.png", study.name, agg, records, x)
    return StudyResult(out, table, agg)


def testbed_studies(study: Study, studies: Iterable[Study] = ()) -> list[Study]:
    """Of `studies` (and `study` itself), those whose default results folder is beside `study`'s
    (results/carry/*, results/signs/*) and that evaluate on the testbed's common set (`in_overview`):
    the studies of one testbed's overview, in the order given (`study` last when it is not among them)."""
    candidates = list(studies)
    if study.name not in {s.name for s in candidates}:
        candidates.append(study)
    return [s for s in candidates if s.in_overview and s.results_dir.parent == study.results_dir.parent]


def overview_studies(results_root: Path, studies: list[Study]) -> list[tuple[str, dict]]:
    """(name, study.json) of each of `studies` whose report is in `results_root`, in the folder named
    like its default one (`results_root/<short name>/study.json`)."""
    found = []
    for study in studies:
        path = results_root / study.results_dir.name / "study.json"
        if path.exists():
            found.append((study.name, json.loads(path.read_text())))
    return found


def write_overview(results_root: Path, study: Study, studies: Iterable[Study] = ()) -> None:
    """`results_root/study_overview.png`: every arm of every study of `study`'s testbed among `studies`
    (`testbed_studies`) reported under `results_root` (`lensrl.research.plots.plot_overview`); nothing
    when there is none."""
    found = overview_studies(results_root, testbed_studies(study, studies))
    if found:
        plot_overview(results_root / "study_overview.png", found)

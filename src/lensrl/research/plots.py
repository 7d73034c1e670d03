"""The figures: training curves of runs (`lensrl plot`) and the figures of a study's report.

    lensrl plot RUN [RUN ...] [--output PNG] [--labels a,b] [--x step|samples|tokens]

draws one PNG of the training curves of one or more runs, overlaid (one colour per run).

A 3 x 3 grid of panels over training steps (`--x samples` / `--x tokens`: over the samples or
response tokens generated since step 1, metrics.jsonl's compute/total_samples and
compute/total_tokens), from each run folder's metrics.jsonl and eval.jsonl (`lensrl.runs.lifecycle`
writes them):

    reward            the pass rate (share of correct samples); dashed: LENS's calibrated reward
    negative groups   share of all-wrong groups; dashed: their share of the advantage mass sum |A|
    KL                approx_kl to the rollout policy; dashed: kl_ref, with a KL term
    clip fraction     clipfrac
    entropy           mean token entropy of the responses
    response length   mean; dashed: max
    step time         total; for a single run also the sample / log-prob / update phases (thin)
    eval pass@k       overall pass@k at each evaluation, one line per k (pass@1 solid, largest k dashed)
    pass@1 by level   bars of the first (light) and the last (solid) evaluation, where levels exist

Per-step curves are noisy: each is drawn thin and faint, with a 5-step running mean in bold. A panel
no run has data for says so. A run still in progress plots what it has so far (`lensrl.runs.jsonl` skips
a line its writer has not finished).

A study (`lensrl.research.study`) draws, from its run records and aggregate:

    study.png            pass@k after training by arm; pass@1 over training overall and on the two
                         hardest levels; the share of all-wrong groups (`plot_study`)
    study_curves.png     the first and last pass@k against the samples (or tokens) generated, per
                         scope (`plot_curves`)
    study_overview.png   final pass@1 and pass@16 of every arm of every study of a testbed (`plot_overview`)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lensrl.evaluation.evaluate import EvalResult
from lensrl.research.records import RunRecord
from lensrl.runs.jsonl import read_jsonl

SMOOTH = 5  # steps in the running mean drawn in bold
GREY = "0.35"  # colour of the line-style keys in each panel's legend
# the x axes of `lensrl plot --x`: the metrics.jsonl key of each and its label
X_AXES = {
    "step": ("step", "step"),
    "samples": ("compute/total_samples", "samples generated"),
    "tokens": ("compute/total_tokens", "tokens generated"),
}


@dataclass(frozen=True)
class Series:
    """One metrics.jsonl key drawn in a panel; `minor`: thin, running mean only, and for a single run only."""

    key: str
    label: str
    style: str = "-"
    minor: bool = False


@dataclass(frozen=True)
class CurvePanel:
    title: str
    ylabel: str
    series: tuple[Series, ...]


CURVE_PANELS = (
    CurvePanel(
        "reward",
        "reward",
        (
            Series("reward", "pass rate (correct samples)"),
            Series("lens/calibrated_reward", "LENS calibrated reward", "--"),
        ),
    ),
    CurvePanel(
        "negative (all-wrong) groups",
        "share",
        (
            Series("groups/negative", "share of groups"),
            Series("adv/negative_group_share", "share of advantage mass", "--"),
        ),
    ),
    CurvePanel(
        "KL",
        "nats / token",
        (Series("approx_kl", "approx KL (rollout policy)"), Series("kl_ref", "KL to reference", "--")),
    ),
    CurvePanel("clip fraction", "share of tokens", (Series("clipfrac", "clipped"),)),
    CurvePanel("entropy", "nats / token", (Series("entropy", "mean token entropy"),)),
    CurvePanel(
        "response length", "tokens", (Series("response_len/mean", "mean"), Series("response_len/max", "max", "--"))
    ),
    CurvePanel(
        "step time",
        "seconds",
        (
            Series("time/step", "total"),
            Series("time/sample", "sample", ":", minor=True),
            Series("time/logprobs", "log-probs", "-.", minor=True),
            Series("time/update", "update", "--", minor=True),
        ),
    ),
)


@dataclass
class Run:
    """What the plot needs of one run folder."""

    label: str
    metrics: list[dict]
    evals: list[dict]  # `EvalResult.to_json()` records
    finished: bool  # summary.json written

    def describe(self, x: str = "step") -> str:
        steps = [r["step"] for r in self.metrics if "step" in r]
        done = "" if self.finished else ", no summary yet"
        if not steps:
            return f"{self.label}: no steps yet"
        key = X_AXES[x][0]
        spent = [r[key] for r in self.metrics if r.get(key) is not None]
        compute = f", {max(spent):,} {x}" if x != "step" and spent else ""
        return f"{self.label}: {max(steps)} steps{compute}{done}"

    def x_at(self, x: str) -> dict[int, float]:
        """Each logged step's x on axis `x` (`X_AXES`), step 0 included (0)."""
        key = X_AXES[x][0]
        return {0: 0} | {r["step"]: r[key] for r in self.metrics if "step" in r and r.get(key) is not None}


# ------------------------------------------------------------------------------------ reading


def load_run(folder: Path, label: str) -> Run:
    if not (folder / "metrics.jsonl").is_file():
        raise ValueError(f"{folder} is not a run folder: no metrics.jsonl")
    return Run(
        label,
        read_jsonl(folder / "metrics.jsonl"),
        read_jsonl(folder / "eval.jsonl"),
        (folder / "summary.json").exists(),
    )


def _series(records: list[dict], key: str, x: str = "step") -> tuple[list[float], list[float]]:
    """The x (`X_AXES`: steps, or the samples or tokens generated up to them) and the values of `key`,
    over the records that log both."""
    xkey = X_AXES[x][0]
    pairs = [(r[xkey], float(r[key])) for r in records if r.get(xkey) is not None and r.get(key) is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def running_mean(values: list[float], window: int = SMOOTH) -> list[float]:
    """Trailing mean over up to `window` points (fewer at the start), skipping NaNs."""
    out = []
    for i in range(len(values)):
        finite = [v for v in values[max(0, i + 1 - window) : i + 1] if not math.isnan(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


def finite(values: list[float | None]) -> list[float]:
    """The values that are numbers: None (a step that does not log the key) and NaN left out."""
    return [v for v in values if v is not None and not math.isnan(v)]


def _k(name: str) -> int:
    return int(name.split("@")[1])


def _level_order(level: str) -> tuple[int, float | str]:
    try:
        return 0, float(level)
    except ValueError:
        return 1, level


# ------------------------------------------------------------------------------------ panels


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in any run", ha="center", va="center", transform=ax.transAxes, color=GREY)


def _style_legend(ax, styles: dict[str, dict]) -> None:
    """A legend of what each line style means (the colours are the runs, in the figure legend)."""
    from matplotlib.lines import Line2D

    if len(styles) > 1:
        ax.legend(
            handles=[Line2D([], [], color=GREY, label=label, **kw) for label, kw in styles.items()],
            fontsize=7,
            loc="best",
        )


def _curve_panel(ax, panel: CurvePanel, runs: list[Run], x: str = "step") -> None:
    """Each run's per-step series: raw thin and faint, running mean bold (minor series: thin mean only)."""
    styles: dict[str, dict] = {}
    for i, run in enumerate(runs):
        for s in panel.series:
            steps, values = _series(run.metrics, s.key, x)
            if not steps or (s.minor and len(runs) > 1):
                continue
            if not s.minor:
                ax.plot(steps, values, color=f"C{i}", ls=s.style, lw=0.7, alpha=0.3)
            width = 1.0 if s.minor else 2.0
            ax.plot(steps, running_mean(values), color=f"C{i}", ls=s.style, lw=width)
            styles[s.label] = {"ls": s.style, "lw": width}
    ax.set(title=panel.title, xlabel=X_AXES[x][1], ylabel=panel.ylabel)
    if not styles:
        _no_data(ax, " / ".join(s.key for s in panel.series))
    _style_legend(ax, styles)


def _passk_style(k: str, ks: list[str]) -> dict:
    if k == ks[0]:
        return {"ls": "-", "marker": "o", "lw": 2.0}
    if k == ks[-1]:
        return {"ls": "--", "marker": "s", "lw": 1.5}
    return {"ls": ":", "marker": ".", "lw": 1.0, "alpha": 0.6}


def _passk_panel(ax, runs: list[Run], x: str = "step") -> None:
    """Overall pass@k at each evaluation, one line per k and run; a k has the same style in every run."""
    ks = sorted({k for run in runs for e in run.evals for k in e["overall"]}, key=_k)
    for i, run in enumerate(runs):
        at = run.x_at(x)
        evals = [e for e in run.evals if e["step"] in at]  # (an evaluation past the logged steps: none yet)
        for k in ks:
            values = [e["overall"].get(k, math.nan) for e in evals]
            if not all(math.isnan(v) for v in values):
                ax.plot([at[e["step"]] for e in evals], values, color=f"C{i}", ms=4, **_passk_style(k, ks))
    ax.set(title="evaluation: pass@k", xlabel=X_AXES[x][1], ylabel="pass@k")
    if not ks:
        _no_data(ax, "evaluations")
    _style_legend(ax, {k: _passk_style(k, ks) for k in ks})


def _levels_panel(ax, runs: list[Run]) -> None:
    """pass@1 per level: the first evaluation (light bars) and the last (solid), runs side by side."""
    with_levels = [(i, run) for i, run in enumerate(runs) if run.evals and run.evals[-1].get("per_level")]
    ax.set(title="pass@1 by level: first (light) vs last evaluation", xlabel="level", ylabel="pass@1")
    if not with_levels:
        _no_data(ax, "per-level evaluations")
        return
    levels = sorted({lv for _, run in with_levels for lv in run.evals[-1]["per_level"]}, key=_level_order)
    width = 0.8 / (2 * len(with_levels))
    for j, (i, run) in enumerate(with_levels):
        for n, (evaluation, alpha) in enumerate(((run.evals[0], 0.35), (run.evals[-1], 1.0))):
            per_level = evaluation.get("per_level", {})
            values = [per_level.get(lv, {}).get("pass@1", math.nan) for lv in levels]
            offset = (2 * j + n + 0.5) * width - 0.4
            ax.bar([x + offset for x in range(len(levels))], values, width, color=f"C{i}", alpha=alpha)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylim(bottom=0)


# ------------------------------------------------------------------------------------ the figure


def _default_output(run_dirs: list[Path]) -> Path:
    return run_dirs[0] / "curves.png" if len(run_dirs) == 1 else Path("curves.png")


def plot_runs(
    run_dirs: list[Path], output: Path | None = None, labels: list[str] | None = None, x: str = "step"
) -> Path:
    """Plot the runs' curves, overlaid, into one PNG (default: RUN/curves.png for one run, ./curves.png
    for several) and return its path. Labels default to the folder names. `x`: the x axis, "step",
    "samples" or "tokens" (generated since step 1); a run whose log has no such totals (one from before
    compute accounting) is an error naming it."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("plot_runs needs at least one run folder")
    if x not in X_AXES:
        raise ValueError(f"unknown x axis {x!r}: {', '.join(X_AXES)}")
    if labels is None:
        labels = [d.resolve().name or str(d) for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs: give one label per run")
    runs = [load_run(d, label) for d, label in zip(run_dirs, labels)]
    key = X_AXES[x][0]
    for d, run in zip(run_dirs, runs):
        if run.metrics and not any(key in r for r in run.metrics):
            raise ValueError(
                f"{d}: its metrics.jsonl has no {key} (a run from before compute accounting); plot it with --x step"
            )
    output = Path(output) if output is not None else _default_output(run_dirs)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(3, 3, figsize=(17, 12.5))
    flat = list(axes.flat)
    for ax, panel in zip(flat, CURVE_PANELS):
        _curve_panel(ax, panel, runs, x)
    _passk_panel(flat[len(CURVE_PANELS)], runs, x)
    _levels_panel(flat[len(CURVE_PANELS) + 1], runs)
    for ax in flat:
        ax.grid(alpha=0.25)
    fig.suptitle(
        "; ".join(run.describe(x) for run in runs) + f"\nper step: faint; bold: {SMOOTH}-step running mean", fontsize=12
    )
    fig.legend(
        handles=[Line2D([], [], color=f"C{i}", lw=2.5, label=run.label) for i, run in enumerate(runs)],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.96),
        ncol=min(len(runs), 6),
        fontsize=9,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


# ------------------------------------------------------------------------------------ a study's figures


def _scope_title(scope: str) -> str:
    return "all levels" if scope == "all" else f"level {scope}"


def at_evaluations(
    runs: list[RunRecord], value: Callable[[RunRecord, EvalResult], float | None]
) -> list[list[float | None]]:
    """`value` of each run at each of its evaluations, aligned for pointwise means over runs
    (`mean_and_std`): the evaluations in order, every run's last one in the last column. Runs that end
    at different steps (a budget, `run.max_tokens`) have fewer evaluations between: None where a run
    has none (runs with the same evaluations: one column per evaluation)."""
    width = max(len(run.evals) for run in runs)
    rows = []
    for run in runs:
        values = [value(run, e) for e in run.evals]
        rows.append(values[:-1] + [None] * (width - len(values)) + values[-1:])
    return rows


def _passk_runs(runs: list[RunRecord], scope: str, k: int) -> list[list[float | None]]:
    """Each run's pass@k in % at every evaluation, on `scope` (`at_evaluations`)."""
    return at_evaluations(runs, lambda run, e: 100 * e.pass_at(scope, k))


def compute_axis(records: dict[str, list[RunRecord]], x: str) -> tuple[str, str]:
    """The axis the study figures can draw for x = "step", "samples" or "tokens", and a note: "tokens"
    falls back to "samples" when a run's record has no token counts (a run from before compute
    accounting), and the note says so."""
    if x == "tokens" and not all(r.has_tokens for runs in records.values() for r in runs):
        return "samples", "tokens: not recorded by every run, so samples"
    return x, ""


def _band(ax, xs: list[float], mean: list[float], spread: list[float], color: str, label: str) -> None:
    """A mean line with a shaded band of +- `spread`."""
    ax.plot(xs, mean, color=color, marker=".", label=label)
    ax.fill_between(
        xs, [m - d for m, d in zip(mean, spread)], [m + d for m, d in zip(mean, spread)], color=color, alpha=0.12
    )


def mean_and_std(runs: list[list[float | None]]) -> tuple[list[float], list[float]]:
    """Pointwise mean and std over runs (seeds) of equally long curves, skipping None and NaN (nan
    where no run has a value; std 0 where one has)."""
    means, stds = [], []
    for column in zip(*runs):
        values = finite(list(column))
        means.append(statistics.fmean(values) if values else math.nan)
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return means, stds


def plot_study(path: Path, name: str, agg: dict, records: dict[str, list[RunRecord]]) -> None:
    """Study `name`'s pass@k by arm; pass@1 over training overall and on the two hardest levels; negative
    groups. `agg`: the study's aggregate (`lensrl.research.study.aggregate`); `records`: its runs by arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [s for s in agg["scopes"] if s != "all"][-2:]
    panels = ["all", *levels]
    fig, axes = plt.subplots(1, 2 + len(panels), figsize=(5 * (2 + len(panels)), 4.2))
    kv = [_k(k) for k in agg["ks"]]
    ax = axes[0]
    ax.plot(kv, [100 * agg["base"]["all"][k] for k in agg["ks"]], "k--o", label="base")
    for arm in records:
        cells = agg["arms"][arm]["all"]
        ax.errorbar(
            kv,
            [100 * cells[k]["mean"] for k in agg["ks"]],
            yerr=[100 * cells[k]["std"] for k in agg["ks"]],
            marker="o",
            capsize=3,
            label=arm,
        )
    ax.set(xscale="log", xlabel="k", ylabel="pass@k (%)", title=f"{name}: pass@k after training")
    ax.set_xticks(kv, [str(k) for k in kv])
    ax.legend(fontsize=8)
    for ax, scope in zip(axes[1:], panels):
        for i, arm in enumerate(records):
            steps, _ = mean_and_std(at_evaluations(records[arm], lambda run, e: e.step))
            mean, spread = mean_and_std(_passk_runs(records[arm], scope, 1))
            _band(ax, steps, mean, spread, f"C{i}", arm)
        ax.set(xlabel="step", ylabel="pass@1 (%)", title=f"pass@1 over training: {_scope_title(scope)} (mean +- std)")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for i, arm in enumerate(records):
        mean, _ = mean_and_std(
            [[None if v is None else 100 * v for v in rec.curves["groups/negative"]] for rec in records[arm]]
        )
        steps = records[arm][0].curves["step"][: len(mean)]  # seeds that end early: the steps they all have
        ax.plot(steps, mean, color=f"C{i}", alpha=0.25)
        ax.plot(steps, running_mean(mean, 5), color=f"C{i}", label=arm)
    ax.set(xlabel="step", ylabel="negative groups (%)", title="all-wrong groups (seed mean; bold: 5-step mean)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: Path, name: str, agg: dict, records: dict[str, list[RunRecord]], x: str = "samples") -> None:
    """The first and the last pass@k (pass@1, pass@16) against the samples generated up to each
    evaluation (`x` "samples": the records' totals, else step x `samples_per_step`), the response tokens
    ("tokens", where every record has them; else samples, and the title says so) or the step ("step"):
    one column per scope (overall and each level), one colour per arm, the seed mean with a band of +-
    std over seeds, at the seeds' mean x (`at_evaluations`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, note = compute_axis(records, x)
    ks, scopes = [agg["ks"][0], agg["ks"][-1]], agg["scopes"]
    fig, axes = plt.subplots(len(ks), len(scopes), figsize=(4 * len(scopes), 3.4 * len(ks)), squeeze=False)
    for row, k in zip(axes, ks):
        for ax, scope in zip(row, scopes):
            for i, (arm, runs) in enumerate(records.items()):
                seen, _ = mean_and_std(at_evaluations(runs, lambda run, e: run.compute_at(x, e.step)))
                mean, spread = mean_and_std(_passk_runs(runs, scope, _k(k)))
                _band(ax, seen, mean, spread, f"C{i}", arm)
            ax.set(xlabel=X_AXES[x][1], ylabel=f"{k} (%)", title=f"{k}: {_scope_title(scope)}")
            ax.grid(alpha=0.25)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"{name}: pass@k against {X_AXES[x][1]}{f' ({note})' if note else ''}; seed mean, band: +- std over seeds"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overview_rows(studies: list[tuple[str, dict]], ks: Sequence[str]) -> list[dict]:
    """Every distinct arm of the (name, study.json) `studies`: final overall pass@k for each of `ks`
    ("pass@1", ...) as mean and standard error over seeds (`row["mean"][k]`, `row["se"][k]`). Arms
    that share their runs (`lens` of main is `normalized`, `G16` and `lens_alpha0.25`: the same values
    at every k) are one row, named by all their names."""
    rows: list[dict] = []
    for name, data in studies:
        for arm, by_scope in data["arms"].items():
            cells = {k: by_scope["all"][k] for k in ks}
            values = {k: c["values"] for k, c in cells.items()}
            same = next((r for r in rows if r["values"] == values), None)
            if same is not None:
                same["names"].append(f"{name}/{arm}")
                continue
            n = len(cells[ks[0]]["values"])
            rows.append(
                {
                    "names": [f"{name}/{arm}"],
                    "values": values,
                    "mean": {k: c["mean"] for k, c in cells.items()},
                    "se": {k: c["std"] / math.sqrt(n) for k, c in cells.items()},
                    "seeds": n,
                }
            )
    return rows


def plot_overview(path: Path, studies: list[tuple[str, dict]]) -> None:
    """Final overall pass@1 and pass@16 (the first and last k) of every arm of the (name, study.json)
    `studies` (`overview_rows`), mean +- 2 standard errors; lines: the first study's base policy and
    reference arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, data = studies[0]
    reference_arm = next(iter(data["arms"]))
    ks = list(data["arms"][reference_arm]["all"])
    ks = [ks[0], ks[-1]]
    rows = overview_rows(studies, ks)  # one row per arm in both panels, so the shared labels fit both
    ys = list(range(len(rows)))[::-1]
    reference = next(r for r in rows if f"{first}/{reference_arm}" in r["names"])
    fig, axes = plt.subplots(1, 2, figsize=(16, 0.45 * len(rows) + 1.6), sharey=True)
    for ax, k in zip(axes, ks):
        ax.errorbar([100 * r["mean"][k] for r in rows], ys, xerr=[200 * r["se"][k] for r in rows], fmt="o", capsize=3)
        ax.axvline(100 * data["base"]["all"][k], color="black", ls=":", lw=1, label=f"base policy ({first})")
        ax.axvline(100 * reference["mean"][k], color="gray", ls="--", lw=1, label=f"{reference_arm} ({first})")
        ax.legend(fontsize=8)
        ax.set(title=f"final {k}: mean +- 2 SE over seeds", xlabel=f"{k} (%)")
    axes[0].set_yticks(ys, [f"{', '.join(r['names'])} ({r['seeds']} seeds)" for r in rows], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""`lensrl plot`: one PNG of the training curves of one or more runs, overlaid (one colour per run).

    lensrl plot RUN [RUN ...] [--output PNG] [--labels a,b]

A 3 x 3 grid of panels over training steps, from each run folder's metrics.jsonl and eval.jsonl
(`lensrl.runs.lifecycle` writes them):

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lensrl.runs.jsonl import read_jsonl

SMOOTH = 5  # steps in the running mean drawn in bold
GREY = "0.35"  # colour of the line-style keys in each panel's legend


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
    CurvePanel("reward", "reward", (Series("reward", "pass rate (correct samples)"),
                                   Series("lens/calibrated_reward", "LENS calibrated reward", "--"))),
    CurvePanel("negative (all-wrong) groups", "share", (
        Series("groups/negative", "share of groups"),
        Series("adv/negative_group_share", "share of advantage mass", "--"))),
    CurvePanel("KL", "nats / token", (Series("approx_kl", "approx KL (rollout policy)"),
                                      Series("kl_ref", "KL to reference", "--"))),
    CurvePanel("clip fraction", "share of tokens", (Series("clipfrac", "clipped"),)),
    CurvePanel("entropy", "nats / token", (Series("entropy", "mean token entropy"),)),
    CurvePanel("response length", "tokens", (Series("response_len/mean", "mean"),
                                             Series("response_len/max", "max", "--"))),
    CurvePanel("step time", "seconds", (
        Series("time/step", "total"),
        Series("time/sample", "sample", ":", minor=True),
        Series("time/logprobs", "log-probs", "-.", minor=True),
        Series("time/update", "update", "--", minor=True))),
)


@dataclass
class Run:
    """What the plot needs of one run folder."""

    label: str
    metrics: list[dict]
    evals: list[dict]  # `EvalResult.to_json()` records
    finished: bool  # summary.json written

    def describe(self) -> str:
        steps = [r["step"] for r in self.metrics if "step" in r]
        done = "" if self.finished else ", no summary yet"
        return f"{self.label}: {max(steps)} steps{done}" if steps else f"{self.label}: no steps yet"


# ------------------------------------------------------------------------------------ reading


def load_run(folder: Path, label: str) -> Run:
    if not (folder / "metrics.jsonl").is_file():
        raise ValueError(f"{folder} is not a run folder: no metrics.jsonl")
    return Run(label, read_jsonl(folder / "metrics.jsonl"), read_jsonl(folder / "eval.jsonl"),
               (folder / "summary.json").exists())


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of `key`, over the records that log it."""
    pairs = [(r["step"], float(r[key])) for r in records if "step" in r and r.get(key) is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def running_mean(values: list[float], window: int = SMOOTH) -> list[float]:
    """Trailing mean over up to `window` points (fewer at the start), skipping NaNs."""
    out = []
    for i in range(len(values)):
        finite = [v for v in values[max(0, i + 1 - window): i + 1] if not math.isnan(v)]
        out.append(sum(finite) / len(finite) if finite else math.nan)
    return out


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
        ax.legend(handles=[Line2D([], [], color=GREY, label=label, **kw) for label, kw in styles.items()],
                  fontsize=7, loc="best")


def _curve_panel(ax, panel: CurvePanel, runs: list[Run]) -> None:
    """Each run's per-step series: raw thin and faint, running mean bold (minor series: thin mean only)."""
    styles: dict[str, dict] = {}
    for i, run in enumerate(runs):
        for s in panel.series:
            steps, values = _series(run.metrics, s.key)
            if not steps or (s.minor and len(runs) > 1):
                continue
            if not s.minor:
                ax.plot(steps, values, color=f"C{i}", ls=s.style, lw=0.7, alpha=0.3)
            width = 1.0 if s.minor else 2.0
            ax.plot(steps, running_mean(values), color=f"C{i}", ls=s.style, lw=width)
            styles[s.label] = {"ls": s.style, "lw": width}
    ax.set(title=panel.title, xlabel="step", ylabel=panel.ylabel)
    if not styles:
        _no_data(ax, " / ".join(s.key for s in panel.series))
    _style_legend(ax, styles)


def _passk_style(k: str, ks: list[str]) -> dict:
    if k == ks[0]:
        return {"ls": "-", "marker": "o", "lw": 2.0}
    if k == ks[-1]:
        return {"ls": "--", "marker": "s", "lw": 1.5}
    return {"ls": ":", "marker": ".", "lw": 1.0, "alpha": 0.6}


def _passk_panel(ax, runs: list[Run]) -> None:
    """Overall pass@k at each evaluation, one line per k and run; a k has the same style in every run."""
    ks = sorted({k for run in runs for e in run.evals for k in e["overall"]}, key=_k)
    for i, run in enumerate(runs):
        steps = [e["step"] for e in run.evals]
        for k in ks:
            values = [e["overall"].get(k, math.nan) for e in run.evals]
            if not all(math.isnan(v) for v in values):
                ax.plot(steps, values, color=f"C{i}", ms=4, **_passk_style(k, ks))
    ax.set(title="evaluation: pass@k", xlabel="step", ylabel="pass@k")
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


def plot_runs(run_dirs: list[Path], output: Path | None = None, labels: list[str] | None = None) -> Path:
    """Plot the runs' curves, overlaid, into one PNG (default: RUN/curves.png for one run, ./curves.png
    for several) and return its path. Labels default to the folder names."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("plot_runs needs at least one run folder")
    if labels is None:
        labels = [d.resolve().name or str(d) for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs: give one label per run")
    runs = [load_run(d, label) for d, label in zip(run_dirs, labels)]
    output = Path(output) if output is not None else _default_output(run_dirs)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(3, 3, figsize=(17, 12.5))
    flat = list(axes.flat)
    for ax, panel in zip(flat, CURVE_PANELS):
        _curve_panel(ax, panel, runs)
    _passk_panel(flat[len(CURVE_PANELS)], runs)
    _levels_panel(flat[len(CURVE_PANELS) + 1], runs)
    for ax in flat:
        ax.grid(alpha=0.25)
    fig.suptitle("; ".join(run.describe() for run in runs)
                 + f"\nper step: faint; bold: {SMOOTH}-step running mean", fontsize=12)
    fig.legend(handles=[Line2D([], [], color=f"C{i}", lw=2.5, label=run.label) for i, run in enumerate(runs)],
               loc="upper center", bbox_to_anchor=(0.5, 0.96), ncol=min(len(runs), 6), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output

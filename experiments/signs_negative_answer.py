"""The answer table of `signs-negative`: what each negative-group arm does against GRPO, read by the plan.

Reads the study's run records (results/signs/negative/runs/<arm>_seed<s>.json) and, for the arms with
every seed of the plan (results/signs/negative/PLAN.md), writes answer.json and answer.md beside them:
per arm, how far its update was from GRPO's (the diagnostic), the seed-paired differences from grpo
in final pass@1 and pass@16 (overall, levels 4 and 5) with their intervals, exact p and MDEs, the
plan's reading of each, and the descriptive numbers (token entropy, step and update time, gradient
norm, share of negative groups). It also checks that grpo and lens, trained again for this study,
followed the committed signs-main runs step for step (the same per-step rewards).

    python -m experiments.signs_negative_answer [--results results/signs/negative]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from experiments.studies import STUDIES
from lensrl import PairedDifference, RunRecord, paired_difference

STUDY = "signs-negative"
REFERENCE = "grpo"
ENDPOINTS = (  # (scope, k), the primary first (PLAN.md "Endpoints")
    ("all", 1),
    ("all", 16),
    ("4", 1),
    ("4", 16),
    ("5", 1),
    ("5", 16),
)
UPDATE_DIFFERS = 0.05
"""The plan's rule: an arm's update differs from GRPO's when its mean diag/rel_diff is at least this."""
DESCRIPTIVE = ("entropy", "time/step", "time/update", "grad_norm", "groups/negative", "groups/updated", "clipfrac")
NOT_ITS_OWN = ("grpo", "grpo_filtered")
"""Arms whose diagnostic compares GRPO with LENS (a GRPO run's), not with the arm's own update."""
DIAGNOSTICS = ("diag/cosine", "diag/rel_diff", "diag/negative_share")
REPLAYED = ("grpo", "lens")
"""Arms that are signs-main's runs trained again (their evaluation set differs, their training must not)."""
MAIN_RECORDS = Path("results/signs/main/runs")


def load(results: Path, arm: str, seeds: tuple[int, ...]) -> list[RunRecord] | None:
    """The arm's records in seed order, or None when a seed is missing (the arm is unfinished)."""
    paths = [results / "runs" / f"{arm}_seed{s}.json" for s in seeds]
    if not all(p.exists() for p in paths):
        return None
    return [RunRecord.from_json(json.loads(p.read_text())) for p in paths]


def finite(values: list[float | None]) -> list[float]:
    """The values that are numbers: None (a step that does not log the key) and NaN left out."""
    return [v for v in values if v is not None and not math.isnan(v)]


def seeds_mean(records: list[RunRecord], key: str, steps: slice = slice(None)) -> float | None:
    """The mean over seeds of each run's mean over its logged steps (those of `steps`, a slice of them)."""
    means = [statistics.fmean(v) for r in records if (v := finite(r.curves.get(key, [])[steps]))]
    return statistics.fmean(means) if means else None


HARDLY_DIFFERS = "its update hardly differs from GRPO's here"
"""The plan's words for an arm whose mean diag/rel_diff is under UPDATE_DIFFERS, whatever its pass@k."""
RULE_SET_ASIDE = " (5% rule set aside)"
"""Appended to the readings of the arms whose diagnostic does not measure their own update
(grpo_filtered): the plan's 5% rule cannot be applied to them, so they are read by the interval alone
(README.md, "Changes to the plan")."""


def reading(d: PairedDifference, update_differs: bool | None = True) -> str:
    """The plan's reading of one seed-paired difference (PLAN.md "Statistics" and "Reading rules"):
    an arm whose update differs from GRPO's by less than the 5% line (`update_differs` False) is
    reported as such, whatever its pass@k; otherwise the 95% interval decides (helps, hurts, no
    difference detected), and a difference without spread is "the same in every seed" (or "identical
    in every seed" when it is 0). `update_differs` None: the rule cannot be applied (RULE_SET_ASIDE);
    True (the default, as the SmolLM2 report reads its endpoints): the interval alone."""
    if update_differs is False:
        return HARDLY_DIFFERS
    if d.identical:
        text = "identical in every seed"
    elif d.constant:
        text = "the same in every seed"
    elif d.ci_low > 0:
        text = "helps"
    elif d.ci_high < 0:
        text = "hurts"
    else:
        text = "no difference detected"
    return text if update_differs else text + RULE_SET_ASIDE


def replay_check(arm: str, records: list[RunRecord]) -> dict[str, bool] | None:
    """Per seed, whether this study's run had the committed signs-main run's reward at every step."""
    if arm not in REPLAYED:
        return None
    out = {}
    for record in records:
        committed = json.loads((MAIN_RECORDS / f"{arm}_seed{record.seed}.json").read_text())
        out[str(record.seed)] = committed["curves"]["reward"] == record.curves["reward"]
    return out


def answer(results: Path) -> dict:
    study = STUDIES[STUDY]
    loaded = {arm.name: load(results, arm.name, study.seeds) for arm in study.arms}
    reference = loaded[REFERENCE]
    if reference is None:
        raise SystemExit(f"{STUDY}: the reference arm {REFERENCE} is not finished")
    arms = {}
    for name, records in loaded.items():
        if records is None:
            arms[name] = {"finished": False}
            continue
        row: dict = {
            "finished": True,
            "final": {f"{s}@{k}": statistics.fmean(r.evals[-1].pass_at(s, k) for r in records) for s, k in ENDPOINTS},
            "update": {key: seeds_mean(records, key) for key in DIAGNOSTICS},
            "descriptive": {key: seeds_mean(records, key) for key in DESCRIPTIVE},
            # the "larger step" reading of filtering: gradient norms early and late (descriptive)
            "grad_norm_steps_1_20": seeds_mean(records, "grad_norm", slice(0, 20)),
            "grad_norm_steps_41_60": seeds_mean(records, "grad_norm", slice(40, 60)),
            "same_training_as_signs_main": replay_check(name, records),
        }
        if name != REFERENCE:
            rel_diff = row["update"]["diag/rel_diff"]
            row["update_differs"] = None if name in NOT_ITS_OWN else bool(rel_diff >= UPDATE_DIFFERS)
            row["vs_grpo"] = {}
            for scope, k in ENDPOINTS:
                d = paired_difference(
                    [r.evals[-1].pass_at(scope, k) for r in reference], [r.evals[-1].pass_at(scope, k) for r in records]
                )
                row["vs_grpo"][f"{scope}@{k}"] = {**d.to_json(), "reading": reading(d, row["update_differs"])}
        arms[name] = row
    return {"study": STUDY, "seeds": list(study.seeds), "reference": REFERENCE, "arms": arms}


def _points(x: float | None, sign: bool = True) -> str:
    return "-" if x is None else f"{100 * x:{'+' if sign else ''}.2f}"


def _difference(w: dict) -> str:
    if w["constant"]:
        return f"{_points(w['diff'])} in every seed"
    return f"{_points(w['diff'])} ({_points(w['ci_low'])}, {_points(w['ci_high'])})"


def table(report: dict) -> str:
    """The answer table in Markdown: one row per finished arm, then the unfinished ones."""
    lines = [
        "| arm | update vs GRPO: rel. diff / cosine / negative share | d pass@1 (95% CI) | reading | MDE | "
        "d pass@16 (95% CI) | reading | step time (s) | update time (s) | token entropy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    unfinished = []
    for name, row in report["arms"].items():
        if not row["finished"]:
            unfinished.append(name)
            continue
        u, desc = row["update"], row["descriptive"]
        update = f"{u['diag/rel_diff']:.3f} / {u['diag/cosine']:.4f} / {100 * u['diag/negative_share']:.1f}%"
        if name == "grpo_filtered":  # the same advantages; the groups without a signal left out
            update = f"GRPO's advantages; {100 * (1 - desc['groups/updated']):.0f}% of groups left out"
        elif name in NOT_ITS_OWN:
            update = "-"
        if name == REFERENCE:
            cells = ["(reference)", "", "", "", ""]
        else:
            p1, p16 = row["vs_grpo"]["all@1"], row["vs_grpo"]["all@16"]
            cells = [_difference(p1), p1["reading"], _points(p1["mde"], False), _difference(p16), p16["reading"]]
        lines.append(
            f"| {name} | {update} | "
            + " | ".join(cells)
            + f" | {desc['time/step']:.2f} | {desc['time/update']:.2f} | {desc['entropy']:.4f} |"
        )
    if unfinished:
        lines += ["", f"Not finished (not all seeds): {', '.join(unfinished)}."]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/signs/negative")
    args = parser.parse_args(argv)
    results = Path(args.results)
    report = {"command": "python -m experiments.signs_negative_answer " + " ".join(argv), **answer(results)}
    (results / "answer.json").write_text(json.dumps(report, indent=2) + "\n")
    text = table(report)
    (results / "answer.md").write_text(f"`{report['command'].strip()}`\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])

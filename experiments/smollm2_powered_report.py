"""The powered SmolLM2 comparison read by its plan (results/smollm2/chain_sum/powered/PLAN.md).

    lensrl study smollm2-powered --jobs 2 run.progress=false   # the runs, the study report
    python -m experiments.smollm2_powered_report               # answer.json and answer.md beside it

It also copies each arm's seed-2 run (the study's first seed) from runs/study/smollm2-powered/, where
it is finished, to adapters/<arm>_seed2/ (its final LoRA adapter and config), which reproduces the
run's final row of eval.jsonl:

    lensrl eval results/smollm2/chain_sum/powered/adapters/grpo_seed2 --step 20 \\
        --config results/smollm2/chain_sum/powered/adapters/grpo_seed2/config.yaml

For each arm against grpo, the seed-paired differences of the plan's endpoints (final overall
pass@1 first; pass@8; levels 3 and 4) with the plan's reading (helps / hurts / no difference
detected, with the MDE); GRPO's own gain from step 0 and whether its interval lies above the +5
target; per arm, the descriptive diagnostics. Arms without all the plan's seeds are listed as
unfinished and read nowhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.signs_negative_answer import finite, load, reading, seeds_mean
from experiments.smollm2_chain_sum import keep_adapter
from experiments.smollm2_lr5e5_report import RESULTS as FOLLOW_UP
from experiments.smollm2_lr5e5_report import pairs
from experiments.studies import STUDIES
from lensrl import RunRecord, paired_difference

STUDY = "smollm2-powered"
KEPT_SEED = 2  # the seed whose adapters are committed
REFERENCE = "grpo"
ENDPOINTS = (("all", 1), ("all", 8), ("3", 1), ("3", 8), ("4", 1), ("4", 8))  # the primary first
TARGET = 0.05  # the original comparison's +5-point target for GRPO's gain
INERT = 0.05  # PLAN.md: an update within 5% of GRPO's (mean diag/rel_diff) hardly differs from it
DESCRIPTIVE = (
    "groups/negative",
    "adv/negative_group_share",
    "diag/cosine",
    "diag/rel_diff",
    "diag/negative_share",
    "reward",
    "response_len/mean",
    "entropy",
    "time/step",
)


def answer(results: Path, seeds: tuple[int, ...]) -> dict:
    study = STUDIES[STUDY]
    records = {arm.name: load(results, arm.name, seeds) for arm in study.arms}
    finished = {arm: r for arm, r in records.items() if r is not None}
    out: dict = {"seeds": list(seeds), "unfinished": [arm for arm, r in records.items() if r is None], "arms": {}}
    ref = finished.get(REFERENCE)
    for arm, runs in finished.items():
        row: dict = {"descriptive": {key: seeds_mean(runs, key) for key in DESCRIPTIVE}}
        # the diagnostic is NaN where GRPO's gradient on its minibatch is 0: count the steps it measured
        row["diagnosed_steps"] = sum(len(finite(r.curves.get("diag/rel_diff", []))) for r in runs)
        start = [r.evals[0].pass_at("all", 1) for r in runs]
        end = [r.evals[-1].pass_at("all", 1) for r in runs]
        gain = paired_difference(start, end)
        row["gain_pass@1"] = {**gain.to_json(), "above_target": gain.ci_low > TARGET}
        if ref is not None and arm != REFERENCE:
            row["vs_grpo"] = {}
            for scope, k in ENDPOINTS:
                d = paired_difference(
                    [r.evals[-1].pass_at(scope, k) for r in ref], [r.evals[-1].pass_at(scope, k) for r in runs]
                )
                row["vs_grpo"][f"{scope} pass@{k}"] = {**d.to_json(), "reading": reading(d)}
        out["arms"][arm] = row
    out["final_pass@1_by_seed"] = {arm: [r.evals[-1].pass_at("all", 1) for r in runs] for arm, runs in finished.items()}
    if "lens" in finished and ref is not None:
        rel_diff = out["arms"]["lens"]["descriptive"]["diag/rel_diff"]
        out["lens_update_hardly_differs"] = None if rel_diff is None else rel_diff < INERT
        out["supplementary"] = supplementary(ref, finished["lens"])
    return out


def supplementary(grpo: list[RunRecord], lens: list[RunRecord]) -> dict:
    """PLAN.md's post hoc supplement: lens - grpo in final overall pass@1 over this study's seeds and
    the lr 5e-5 follow-up's two seed pairs (the same config but a mid-run evaluation)."""
    follow_up = pairs(FOLLOW_UP)
    grpo = [follow_up[s]["grpo"] for s in sorted(follow_up)] + grpo
    lens = [follow_up[s]["lens"] for s in sorted(follow_up)] + lens
    d = paired_difference([r.evals[-1].pass_at("all", 1) for r in grpo], [r.evals[-1].pass_at("all", 1) for r in lens])
    seeds = [r.seed for r in grpo]
    return {"seeds": seeds, **d.to_json(), "reading": reading(d)}


def markdown(report: dict) -> str:
    def pts(x: float | None, sign: str = "+") -> str:
        return "n/a" if x is None else f"{100 * x:{sign}.2f}"

    lines = [
        f"Seeds {', '.join(map(str, report['seeds']))}; unfinished arms: {', '.join(report['unfinished']) or 'none'}.",
        "",
    ]
    lines += ["| arm | endpoint | d (points) | 95% CI | MDE | reading |", "|---|---|---|---|---|---|"]
    for arm, row in report["arms"].items():
        for name, d in row.get("vs_grpo", {}).items():
            ci = f"({pts(d['ci_low'])}, {pts(d['ci_high'])})"
            lines.append(f"| {arm} | {name} | {pts(d['diff'])} | {ci} | {pts(d['mde'], '')} | {d['reading']} |")
    lines += ["", "| arm | gain in pass@1 from step 0 | 95% CI | above +5 |", "|---|---|---|---|"]
    for arm, row in report["arms"].items():
        g = row["gain_pass@1"]
        lines.append(f"| {arm} | {pts(g['diff'])} | ({pts(g['ci_low'])}, {pts(g['ci_high'])}) | {g['above_target']} |")
    if "lens_update_hardly_differs" in report:
        verdict = {
            True: "LENS's update hardly differs from GRPO's",
            False: "LENS's update differs from GRPO's",
            None: "nothing can be said: no diag/rel_diff was logged",
        }
        lines += [
            "",
            f"By the plan's rule (mean diag/rel_diff below {INERT}): {verdict[report['lens_update_hardly_differs']]}.",
        ]
    if "supplementary" in report:
        d = report["supplementary"]
        seeds = ", ".join(map(str, d["seeds"]))
        lines += [
            "",
            f"Supplementary (post hoc), lens - grpo in final overall pass@1 over seeds {seeds}: {pts(d['diff'])}"
            f" ({pts(d['ci_low'])}, {pts(d['ci_high'])}), MDE {pts(d['mde'], '')}, {d['reading']}.",
        ]
    columns = [*DESCRIPTIVE, "diagnosed steps"]
    lines += ["", "| arm | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for arm, row in report["arms"].items():
        cells = ["n/a" if (v := row["descriptive"][key]) is None else f"{v:.4g}" for key in DESCRIPTIVE]
        lines.append(f"| {arm} | " + " | ".join([*cells, str(row["diagnosed_steps"])]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", default=str(STUDIES[STUDY].results_dir))
    parser.add_argument("--seeds", default=",".join(map(str, STUDIES[STUDY].seeds)))
    parser.add_argument("--runs-dir", default=f"runs/study/{STUDY}")
    args = parser.parse_args(argv)
    results, seeds = Path(args.results_dir), tuple(int(s) for s in args.seeds.split(","))
    for arm in STUDIES[STUDY].arms:
        run = Path(args.runs_dir) / f"{arm.name}_seed{KEPT_SEED}"
        if (run / "summary.json").exists():
            keep_adapter(run, results / "adapters" / run.name)
    command = "python -m experiments.smollm2_powered_report " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"command": command, **answer(results, seeds)}
    (results / "answer.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (results / "answer.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

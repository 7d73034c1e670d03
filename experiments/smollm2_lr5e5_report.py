"""The lr 5e-5 follow-up's report: LENS against GRPO on SmolLM2 chain sums, two seed pairs.

    lensrl study smollm2-lr5e-5 --jobs 2         # seed 1's pair, from the committed warm start
    python -m experiments.smollm2_lr5e5_report   # results.json and compare.md in results/smollm2/chain_sum/lr5e-5

Seed 0's pair (GRPO, LENS) and a first GRPO seed-1 run were trained from the warm start as it was
then, whose adapter was not kept (their logs are in logs/); seed 1's pair was trained again from the
committed warm start (results/smollm2/chain_sum/warmstart, the same recipe, retrained on a CPU whose
bf16 matmuls round differently; its reproduction.json). Each pair starts from one warm start, so
both pairs are paired exactly; the first GRPO seed-1 run is a replicate of the second up to that
float-level difference in the start, which shows how much such a difference moves a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.signs_negative_answer import seeds_mean
from lensrl import RunRecord, paired_difference, run_record

RESULTS = Path("results/smollm2/chain_sum/lr5e-5")
SCOPES = ("all", "1", "2", "3", "4")
KS = (1, 8)


def pairs(results: Path) -> dict[int, dict[str, RunRecord]]:
    """Seed -> arm -> record: seed 0 from the committed logs, seed 1 from the study's records."""
    old = {
        name: run_record(results / "logs" / name, name.removesuffix("_seed0"), 0)
        for name in ("grpo_seed0", "lens_seed0")
    }
    new = {
        arm: RunRecord.from_json(json.loads((results / "runs" / f"{arm}_seed1.json").read_text()))
        for arm in ("grpo", "lens")
    }
    return {0: {"grpo": old["grpo_seed0"], "lens": old["lens_seed0"]}, 1: new}


def final(record: RunRecord, scope: str, k: int) -> float:
    return record.evals[-1].pass_at(scope, k)


def gain(record: RunRecord, scope: str, k: int) -> float:
    return record.evals[-1].pass_at(scope, k) - record.evals[0].pass_at(scope, k)


def report(results: Path) -> dict:
    runs = pairs(results)
    seeds = sorted(runs)
    first_grpo1 = run_record(results / "logs" / "grpo_seed1", "grpo", 1)
    out: dict = {
        "seeds": seeds,
        "final": {
            arm: {
                s: {scope: {f"pass@{k}": final(runs[s][arm], scope, k) for k in KS} for scope in SCOPES} for s in seeds
            }
            for arm in ("grpo", "lens")
        },
        "step0": {s: {f"pass@{k}": runs[s]["grpo"].evals[0].pass_at("all", k) for k in KS} for s in seeds},
        "lens_minus_grpo": {
            scope: {
                f"pass@{k}": paired_difference(
                    [final(runs[s]["grpo"], scope, k) for s in seeds], [final(runs[s]["lens"], scope, k) for s in seeds]
                ).to_json()
                for k in KS
            }
            for scope in SCOPES
        },
        "gains": {
            arm: {
                f"pass@{k}": {
                    "by_seed": {s: gain(runs[s][arm], "all", k) for s in seeds},
                    **paired_difference(
                        [runs[s][arm].evals[0].pass_at("all", k) for s in seeds],
                        [runs[s][arm].evals[-1].pass_at("all", k) for s in seeds],
                    ).to_json(),
                }
                for k in KS
            }
            for arm in ("grpo", "lens")
        },
        "replicate_grpo_seed1": {
            "first_warm_start": {
                "step0": first_grpo1.evals[0].pass_at("all", 1),
                "final": final(first_grpo1, "all", 1),
            },
            "committed_warm_start": {
                "step0": runs[1]["grpo"].evals[0].pass_at("all", 1),
                "final": final(runs[1]["grpo"], "all", 1),
            },
        },
        "diagnostics": {
            f"{arm}_seed{s}": {
                key: seeds_mean([runs[s][arm]], key)
                for key in ("groups/negative", "adv/negative_group_share", "reward", "response_len/mean", "time/step")
            }
            for s in seeds
            for arm in ("grpo", "lens")
        },
    }
    return out


def markdown(r: dict) -> str:
    def pts(x: float, sign: bool = False) -> str:
        return f"{100 * x:{'+' if sign else ''}.1f}"

    def both(cell: dict, sign: bool = False) -> str:
        return f"{pts(cell['pass@1'], sign)} / {pts(cell['pass@8'], sign)}"

    lines = [
        "| seed | step 0 pass@1 / @8 | GRPO final pass@1 / @8 | LENS final pass@1 / @8 | LENS - GRPO pass@1 / @8 |",
        "|---|---|---|---|---|",
    ]
    for s in r["seeds"]:
        g, le = r["final"]["grpo"][s]["all"], r["final"]["lens"][s]["all"]
        diff = {k: le[k] - g[k] for k in g}
        lines.append(f"| {s} | {both(r['step0'][s])} | {both(g)} | {both(le)} | {both(diff, sign=True)} |")
    lines += ["", "| LENS - GRPO, final, 2 pairs | mean | 95% CI | MDE |", "|---|---|---|---|"]
    for scope in SCOPES:
        for k in KS:
            d = r["lens_minus_grpo"][scope][f"pass@{k}"]
            ci = "n/a" if d["ci_low"] is None else f"({pts(d['ci_low'], True)}, {pts(d['ci_high'], True)})"
            mde = "n/a" if d["mde"] is None else pts(d["mde"])
            name = "overall" if scope == "all" else f"level {scope}"
            lines.append(f"| {name} pass@{k} | {pts(d['diff'], True)} | {ci} | {mde} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    results = Path(args.results_dir)
    r = {
        "command": "python -m experiments.smollm2_lr5e5_report " + " ".join(sys.argv[1:] if argv is None else argv),
        **report(results),
    }
    (results / "results.json").write_text(json.dumps(r, indent=2) + "\n")
    text = markdown(r)
    (results / "compare.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

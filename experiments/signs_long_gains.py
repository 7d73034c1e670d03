"""Secondary endpoint 3 of results/signs/PLAN.md: does LENS keep improving after GRPO saturates?

    python -m experiments.signs_long_gains [results/signs/long]

Reads the signs-long study's per-run records (runs/<arm>_seed<S>.json, written by
`lensrl study signs-long`) and, per seed, each arm's gain in overall pass@1 from the default length
(step 60) to 3x (step 180). Reports, paired by seed with 95% t intervals and exact sign-flip p-values
(`lensrl.research.stats.PairedDifference`):
* GRPO's own gain (the plan reads "GRPO saturates" as this interval containing 0 or lying below it);
* LENS's own gain;
* LENS's gain minus GRPO's gain.
Writes gains.json next to the records and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lensrl import PairedDifference, RunRecord, paired_difference

DEFAULT_STEPS = 60


def pass1_at(record: RunRecord, step: int, level: str = "all") -> float:
    (evaluation,) = [e for e in record.evals if e.step == step]
    return evaluation.pass_at(level, 1)


def gains(folder: Path, level: str = "all") -> dict:
    records = {
        p.stem: RunRecord.from_json(json.loads(p.read_text())) for p in sorted((folder / "runs").glob("*_seed*.json"))
    }
    seeds = sorted({r.seed for r in records.values()})
    final = max(e.step for e in records[f"grpo_seed{seeds[0]}"].evals)

    def series(arm: str, step: int) -> list[float]:
        return [pass1_at(records[f"{arm}_seed{s}"], step, level) for s in seeds]

    out = {"seeds": seeds, "from_step": DEFAULT_STEPS, "to_step": final, "level": level}
    grpo = paired_difference(series("grpo", DEFAULT_STEPS), series("grpo", final))
    lens = paired_difference(series("lens", DEFAULT_STEPS), series("lens", final))
    grpo_gain = [b - a for a, b in zip(series("grpo", DEFAULT_STEPS), series("grpo", final))]
    lens_gain = [b - a for a, b in zip(series("lens", DEFAULT_STEPS), series("lens", final))]
    out["grpo_gain"], out["lens_gain"] = grpo.to_json(), lens.to_json()
    out["lens_minus_grpo_gain"] = paired_difference(grpo_gain, lens_gain).to_json()
    # the CI contains 0 or lies below it (a gain constant over seeds: the gain itself); False with one seed
    out["grpo_saturates"] = grpo.ci_low <= 0
    return out


def describe(d: PairedDifference) -> str:
    """One gain in points: its interval, or the same gain in every seed, with both p-values."""
    if d.identical:
        return f"identical in every seed, n = {d.n}"
    if d.constant:
        return f"{100 * d.diff:+.4g} points in every seed, n = {d.n}, exact p = {d.p_exact:.3g}"
    return (
        f"{100 * d.diff:+.2f} points, 95% CI ({100 * d.ci_low:+.2f}, {100 * d.ci_high:+.2f}), n = {d.n}, "
        f"p = {d.p:.3g}, exact p = {d.p_exact:.3g}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default="results/signs/long")
    folder = Path(parser.parse_args(argv).folder)
    report = {level: gains(folder, level) for level in ("all", "4", "5")}
    (folder / "gains.json").write_text(json.dumps(report, indent=2))
    for level, r in report.items():
        for key in ("grpo_gain", "lens_gain", "lens_minus_grpo_gain"):
            print(f"level {level:>3} {key:<22} {describe(PairedDifference.from_json(r[key]))}")
        print(f"level {level:>3} GRPO saturates (its gain's CI contains 0 or lies below it): {r['grpo_saturates']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How much each negative-group arm's update differs from GRPO's at the signs testbed's start.

Before the negative-groups study (results/signs/negative/PLAN.md) chose its arms, this measured, on
the base policy and the first rollouts of the default run (seed 0, steps 1-3, the same rollouts for
every arm), the update-level diagnostic of `lensrl.training.diagnostics` for each candidate arm:
the cosine between GRPO's first-minibatch gradient and the arm's, their relative difference, and
the negative groups' share of the arm's gradient norm. It compares no outcomes (no training, no
evaluation); it picks the LENS alphas at which negative groups hold a real share of the update.

    python -m experiments.signs_negative_probe [--rollouts 3] [--output results/signs/negative/probe.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.machine import describe_machine
from lensrl import load_config, measure_gradients

CANDIDATES: dict[str, tuple[str, ...]] = {
    "lens": ("algo.advantage=lens",),
    **{f"lens_alpha{a:g}": ("algo.advantage=lens", f"algo.alpha={a:g}") for a in (16, 64, 256, 1024, 4096)},
    "lens_normalized_negative": ("algo.advantage=lens", "algo.normalize_negative=true"),
    "w_reinforce": ("algo.advantage=w_reinforce",),
    "nsr": ("algo.advantage=nsr",),
    "ngrpo": ("algo.advantage=ngrpo",),
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=3)
    parser.add_argument("--output", default="results/signs/negative/probe.json")
    args = parser.parse_args(argv)
    report = {
        "command": "python -m experiments.signs_negative_probe " + " ".join(argv),
        "machine": describe_machine(),
        "arms": {},
    }
    model = load_config("testbed:signs").model.name_or_path  # the signs testbed's base policy
    for name, overrides in CANDIDATES.items():
        # `lensrl grad-diff MODEL --config testbed:signs OVERRIDES`: the rollouts' diagnostics and their mean
        measured = measure_gradients([model], args.rollouts, "testbed:signs", [*overrides, "run.progress=false"])
        report["arms"][name] = {"overrides": list(overrides), **measured["models"][model]}
        m = report["arms"][name]["mean"]
        print(
            f"{name:26s} cosine {m['diag/cosine']:.6f}  rel_diff {m['diag/rel_diff']:.4f}  "
            f"negative_share {m['diag/negative_share']:.4f}",
            flush=True,
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])

"""experiments/smollm2_chain_sum.py: the plan's learning-rate rule and the step-0 gains it reports."""

import json
from pathlib import Path

import pytest

import experiments.smollm2_chain_sum as study
from lensrl.evaluation.evaluate import EvalResult


def probe(first: float, second: float, unparseable: float = 0.0) -> dict:
    return {"reward_first_half": first, "reward_second_half": second, "max_unparseable_second_half": unparseable}


def test_lr_rule_takes_the_largest_lr_whose_reward_rose_cleanly():
    # Both rose with few unparseable samples: the larger lr.
    assert study.choose_lr({"5e-5": probe(0.37, 0.44), "2e-4": probe(0.26, 0.37)}) == "2e-4"
    # The larger one's reward fell: the smaller.
    assert study.choose_lr({"5e-5": probe(0.37, 0.44), "2e-4": probe(0.30, 0.29)}) == "5e-5"
    # The larger one rose but left 11% of a step's samples without an answer (the limit is 10%).
    assert study.choose_lr({"5e-5": probe(0.37, 0.44), "2e-4": probe(0.26, 0.37, unparseable=0.11)}) == "5e-5"
    assert study.choose_lr({"5e-5": probe(0.37, 0.44), "2e-4": probe(0.26, 0.37, unparseable=0.10)}) == "2e-4"
    # Neither passes: the smallest, whatever the order of the keys.
    assert study.choose_lr({"2e-4": probe(0.3, 0.2), "5e-5": probe(0.3, 0.3)}) == "5e-5"


def write_run(folder: Path, overall: list[float], level_1: list[float]) -> Path:
    """A run folder whose eval.jsonl has one row per value, at steps 0, 10, 20, ...: pass@1 = pass@8 = the
    value (overall), and level 1's pass@1 = pass@8 = level_1's."""
    folder.mkdir(parents=True)
    rows = [
        EvalResult(
            step=10 * i,
            overall={"pass@1": o, "pass@8": o},
            per_level={"1": {"pass@1": l1, "pass@8": l1}},
            all_wrong=0.0,
            all_wrong_per_level={"1": 0.0},
            n_problems=8,
            samples=8,
        )
        for i, (o, l1) in enumerate(zip(overall, level_1))
    ]
    (folder / "eval.jsonl").write_text("".join(json.dumps(r.to_json()) + "\n" for r in rows))
    return folder


def test_gains_from_step_0_per_seed_and_paired(tmp_path):
    # GRPO overall: seed 0 0.20 -> 0.32 (+0.12), seed 1 0.20 -> 0.22 (+0.02): mean +0.07, sd of
    # (0.12, 0.02) = 0.1 / sqrt(2) = 0.0707. The middle row (step 10) is not read.
    # LENS overall: +0.02 and +0.00, mean +0.01. Level 1 of GRPO: +0.30 and +0.10, mean +0.20.
    runs = {
        "grpo_seed0": write_run(tmp_path / "g0", [0.20, 0.10, 0.32], [0.3, 0.3, 0.6]),
        "grpo_seed1": write_run(tmp_path / "g1", [0.20, 0.25, 0.22], [0.3, 0.3, 0.4]),
        "lens_seed0": write_run(tmp_path / "l0", [0.20, 0.30, 0.22], [0.3, 0.3, 0.3]),
        "lens_seed1": write_run(tmp_path / "l1", [0.20, 0.20, 0.20], [0.3, 0.3, 0.3]),
    }
    out = study.gains(runs, [0, 1])
    grpo = out["grpo"]["all"]["pass@1"]
    assert grpo["by_seed"] == {0: pytest.approx(0.12), 1: pytest.approx(0.02)}
    assert grpo["diff"] == pytest.approx(0.07) and grpo["sd"] == pytest.approx(0.1 / 2**0.5)
    assert out["lens"]["all"]["pass@8"]["diff"] == pytest.approx(0.01)
    assert out["grpo"]["1"]["pass@1"]["diff"] == pytest.approx(0.20)
    assert out["target_met"]  # +7 points against the target of +5
    write_run(tmp_path / "g1b", [0.20, 0.25, 0.16], [0.3, 0.3, 0.4])  # seed 1: -0.04, mean +0.04
    assert not study.gains({**runs, "grpo_seed1": tmp_path / "g1b"}, [0, 1])["target_met"]

"""The committed chain-sum data (experiments/chain_sum_data.py): worked solutions and splits, checked
without reasoning-gym."""

import json
import re
from pathlib import Path

import pytest

import experiments.chain_sum_data as chain_sum_data
from lensrl.data.answers import extract_answer
from lensrl.data.sources import load_jsonl
from lensrl.rollout.verify import verify_math

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "chain_sum"


def test_worked_solution_hand_worked():
    # 2 - 8 = -6; -6 + 7 = 1; 1 - 9 = -8
    assert chain_sum_data.worked_solution("2 - 8 + 7 - 9") == (
        "2 - 8 = -6\n-6 + 7 = 1\n1 - 9 = -8\nThe final answer is \\boxed{-8}."
    )
    with pytest.raises(ValueError):
        chain_sum_data.worked_solution("2 * 3")


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["heldout", "sft", "rl"])
def test_every_committed_solution_is_right_and_boxed(name):
    for row in rows(name):
        expression = (
            row["problem"]
            .removeprefix("State the final answer to the following arithmetic problem: ")
            .removesuffix(" =")
        )
        terms = expression.split()[::2]
        assert len(terms) == chain_sum_data.LEVEL_TERMS[row["level"]]
        assert all(0 <= int(t) <= 9 for t in terms)  # 1-digit terms
        worked = row["solution"].splitlines()[:-1]
        assert len(worked) in (0, len(terms) - 1)  # a direct answer, or every operation worked
        for line in worked:  # "a op b = c", each step right
            a, op, b, _, c = line.split()
            assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        assert extract_answer(row["solution"]) == row["answer"]
        assert verify_math(row["solution"], row["answer"])


def test_splits_are_disjoint_and_load_as_lensrl_data():
    held = {row["problem"] for row in rows("heldout")}
    assert len(held) == 200
    assert not held & {row["problem"] for row in rows("sft") + rows("rl")}
    problems = load_jsonl(DATA / "heldout.jsonl", kind="custom")
    assert [sum(p.level == lv for p in problems) for lv in (1, 2, 3, 4)] == [50, 50, 50, 50]
    assert all(p.solution and re.search(r"\\boxed\{-?\d+\}\.$", p.solution) for p in problems)


def test_only_the_warm_start_mixes_direct_answers_in_about_half_its_rows():
    direct = {
        name: [row["solution"].startswith("The final answer") for row in rows(name)]
        for name in ("sft", "rl", "heldout")
    }
    assert not any(direct["rl"]) and not any(direct["heldout"])
    # 1,199 rows with P(direct) = 0.5: the share lies within 0.5 +- 0.05 (more than 3 standard errors of 0.0144)
    assert abs(sum(direct["sft"]) / len(direct["sft"]) - 0.5) < 0.05

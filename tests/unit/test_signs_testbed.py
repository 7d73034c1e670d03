"""The signs testbed: its problems, its teacher, and its selection by name for data, models and configs."""

from __future__ import annotations

import random
import re

import pytest

from lensrl.config import DataConfig, load_config
from lensrl.data import load_problems
from lensrl.problem import Problem
from lensrl.testbed import signs
from lensrl.testbed import testbed_name as name_of
from lensrl.verify import verify_math

STEP = re.compile(r"(\d+)([+-])(\d+)=(\d+)")


def test_hand_worked_problem_and_both_rules():
    # "8-3+6": the right rule gives 8-3=5, 5+6=11; the wrong rule reads the minus as a plus: 8+3=11, 11+6=17
    p = Problem(prompt="Q:8-3+6\nA:", answer="11", level=2, solution="8-3=5 5+6=11 \\boxed{11}")
    assert signs.wrong_rule_solution(p) == "8+3=11 11+6=17 \\boxed{17}"
    assert signs.wrong_rule_answer(p) == "17"


@pytest.mark.parametrize("level", signs.LEVELS)
def test_problems_follow_the_level_definition(level):
    for p in signs.generate_problems(200, levels=(level,), seed=level):
        expression = p.prompt.removeprefix("Q:").removesuffix("\nA:")
        terms = [int(t) for t in re.split(r"[+-]", expression)]
        assert len(terms) == level + 1 and all(1 <= t <= signs.MAX_NUMBER[level] for t in terms)
        assert "-" in expression
        steps = STEP.findall(p.solution)
        assert len(steps) == level
        total = terms[0]
        for a, op, b, result in steps:  # each step continues the running total, which stays in [0, 99]
            assert int(a) == total
            total = total + int(b) if op == "+" else total - int(b)
            assert int(result) == total and 0 <= total <= signs.MAX_TOTAL
        assert p.answer == str(total) and verify_math(p.solution, p.answer)
        assert p.level == level and p.id == f"S{level}:{expression}"


def test_wrong_rule_adds_every_term_and_differs_from_the_answer():
    for p in signs.generate_problems(100, seed=3):
        wrong = signs.wrong_rule_solution(p)
        assert "-" not in wrong and verify_math(wrong, signs.wrong_rule_answer(p))
        assert signs.wrong_rule_answer(p) != p.answer  # some term is subtracted, so dropping its sign changes the sum


def test_generation_is_seeded_and_leaves_global_random_alone():
    state = random.getstate()
    assert signs.generate_problems(20, seed=5) == signs.generate_problems(20, seed=5)
    assert signs.generate_problems(20, seed=5) != signs.generate_problems(20, seed=6)
    assert random.getstate() == state


def test_teacher_uses_the_wrong_rule_at_its_rate_per_level():
    rng = random.Random(0)
    for level, rate in signs.WRONG_RULE.items():
        problems = signs.generate_problems(4000, levels=(level,), seed=level)
        wrong = sum(signs.demonstration(p, rng).solution != p.solution for p in problems) / len(problems)
        assert abs(wrong - rate) < 0.03, (level, wrong, rate)  # binomial sd <= 0.008 at n = 4000


def test_invalid_levels_raise():
    with pytest.raises(ValueError, match="level"):
        signs.make_problem(6, random.Random(0))
    with pytest.raises(ValueError):
        signs.generate_problems(3, levels=())


def test_testbed_names():
    assert name_of("testbed") == "carry" and name_of("testbed:carry") == "carry"
    assert name_of("testbed:signs") == "signs"
    assert name_of("data/train.jsonl") is None
    with pytest.raises(ValueError, match="known: testbed:carry, testbed:signs"):
        name_of("testbed:nope")


def test_data_sources_select_the_testbed_by_name():
    data = DataConfig(train="testbed:signs", eval="testbed:signs")
    assert data.train[0].size == 20_000 and data.eval[0].per_level == 100  # the bare-name shorthand's defaults
    train, evals = load_problems(DataConfig(train=[{"path": "testbed:signs", "size": 10}],
                                            eval=[{"path": "testbed:signs", "per_level": 2}]), seed=0)
    assert train == signs.generate_problems(10, seed=0)
    assert [p.level for p in evals] == [1, 2, 3, 4, 5] * 2 and all(p.id.startswith("S") for p in evals)


def test_the_default_run_config_loads_by_name():
    config = load_config("testbed:signs")
    assert config.model.name_or_path == "testbed:signs"
    assert config.data.train[0].path == config.data.eval[0].path == "testbed:signs"
    assert config.rollout.sampler == "compact"
    with pytest.raises(ValueError, match="no default run config"):
        load_config("testbed:carry")

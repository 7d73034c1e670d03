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

def test_hand_worked_problem_and_its_dropped_signs():
    # "8-3+6-2": right 8-3=5, 5+6=11, 11-2=9. Dropping the first minus: 8+3=11, 11+6=17, 17-2=15; the last:
    # 8-3=5, 5+6=11, 11+2=13; both: 8+3=11, 11+6=17, 17+2=19
    p = Problem(prompt="Q:8-3+6-2\nA:", answer="9", level=3, solution="8-3=5 5+6=11 11-2=9 \\boxed{9}")
    assert signs.dropped_solution(p, []) == p.solution
    assert signs.dropped_solution(p, [0]) == "8+3=11 11+6=17 17-2=15 \\boxed{15}"
    assert signs.dropped_solution(p, [2]) == "8-3=5 5+6=11 11+2=13 \\boxed{13}"
    assert signs.wrong_rule_answers(p) == {"15", "13", "19"}
    with pytest.raises(ValueError, match="not all minus signs"):
        signs.dropped_solution(p, [1])


STEP = re.compile(r"(\d+)([+-])(\d+)=(\d+)")


@pytest.mark.parametrize("level", signs.LEVELS)
def test_problems_follow_the_level_definition(level):
    for p in signs.generate_problems(200, levels=(level,), seed=level):
        expression = p.prompt.removeprefix("Q:").removesuffix("\nA:")
        terms = [int(t) for t in re.split(r"[+-]", expression)]
        assert len(terms) == level + 1 and all(1 <= t <= signs.MAX_NUMBER for t in terms)
        assert "-" in expression
        steps = STEP.findall(p.solution)
        assert len(steps) == level
        total = terms[0]
        for (a, op, b, result), op_prompt, term in zip(steps, re.findall(r"[+-]", expression), terms[1:]):
            assert (int(a), op, int(b)) == (total, op_prompt, term)  # each step continues the running total
            total = total + term if op == "+" else total - term
            assert int(result) == total and 0 <= total <= signs.MAX_TOTAL
        assert p.answer == str(total) and verify_math(p.solution, p.answer)
        assert p.answer not in signs.wrong_rule_answers(p)  # a dropped sign adds twice its term
        assert p.level == level and p.id == f"S{level}:{expression}"


def test_the_teacher_practises_half_the_time_and_drops_signs_at_its_rate_per_level():
    rng = random.Random(0)
    for level, rate in signs.DROP_MINUS.items():
        problems = signs.generate_problems(4000, levels=(level,), seed=level)
        shown = [signs.demonstration(p, rng) for p in problems]
        practice = [d for d in shown if d.prompt.startswith("P:")]
        assert abs(len(practice) / len(shown) - signs.PRACTICE_SHARE) < 0.03  # binomial sd 0.008
        assert all(d.solution == p.solution and d.prompt[2:] == p.prompt[2:] for d, p in zip(shown, problems)
                   if d in practice)
        task = [(d, p) for d, p in zip(shown, problems) if d.prompt.startswith("Q:")]
        signs_shown = sum(p.prompt.count("-") for _, p in task)
        dropped = sum(p.prompt.count("-") - d.solution.split(" \\boxed")[0].count("-") for d, p in task)
        assert abs(dropped / signs_shown - rate) < 0.03, (level, dropped / signs_shown, rate)
        assert all(verify_math(d.solution, p.answer) == (d.solution == p.solution) for d, p in task)


def test_generation_is_seeded_and_leaves_global_random_alone():
    state = random.getstate()
    assert signs.generate_problems(20, seed=5) == signs.generate_problems(20, seed=5)
    assert signs.generate_problems(20, seed=5) != signs.generate_problems(20, seed=6)
    assert random.getstate() == state


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

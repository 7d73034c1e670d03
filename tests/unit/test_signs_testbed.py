"""The signs testbed: its problems, its teacher, and its selection by name for data, models and configs."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch

from lensrl.config import DataConfig, ModelConfig, load_config
from lensrl.data.answers import extract_answer
from lensrl.data.sources import load_eval_problems, load_problems
from lensrl.evaluation.profile import Profile, measure_profile, signs_checks
from lensrl.policy.models import load_policy
from lensrl.records import Problem
from lensrl.rollout.verify import verify_math
from lensrl.testbed import signs
from lensrl.testbed import testbed_name as name_of


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
        assert all(
            d.solution == p.solution and d.prompt[2:] == p.prompt[2:] for d, p in zip(shown, problems) if d in practice
        )
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
    train, evals = load_problems(
        DataConfig(train=[{"path": "testbed:signs", "size": 10}], eval=[{"path": "testbed:signs", "per_level": 2}]),
        seed=0,
    )
    assert train == signs.generate_problems(10, seed=0)
    assert [p.level for p in evals] == [1, 2, 3, 4, 5] * 2 and all(p.id.startswith("S") for p in evals)


def test_the_warm_start_stream_is_the_one_the_committed_policy_trained_on():
    from lensrl.testbed import warmstart_problems
    from lensrl.training.warmstart import committed_config

    config = committed_config("signs")  # 1000 steps x 64: train_policy draws exactly these, in this order
    stream = warmstart_problems("signs")
    assert stream == signs.generate_problems(config.steps * config.batch_size, config.levels, seed=config.seed)
    assert len(stream) == 64_000
    # every one of level 1's 45 problems (a - b with 1 <= b <= a <= 9) is in it: level 1 cannot be held out
    assert {p.id for p in stream if p.level == 1} == {f"S1:{a}-{b}" for a in range(1, 10) for b in range(1, a + 1)}


def test_unseen_evaluation_problems_are_in_no_training_stage():
    from lensrl.testbed import warmstart_problems

    unseen = {"path": "testbed:signs", "per_level": 20, "levels": [4, 5], "unseen": True}
    data = DataConfig(train=[{"path": "testbed:signs", "size": 2000}], eval=[unseen])
    train, evals = load_problems(data, seed=3)
    seen = {p.id for p in warmstart_problems("signs")} | {p.id for p in train}
    assert [p.level for p in evals] == [4] * 20 + [5] * 20  # level by level, distinct, none seen
    assert len({p.id for p in evals}) == 40 and not seen & {p.id for p in evals}
    assert evals == load_problems(data, seed=3)[1]  # seeded
    assert load_eval_problems(data, seed=3) == evals  # alone, it still reads the training problems to exclude
    # a level without enough unseen problems is an error naming it
    with pytest.raises(ValueError, match="level 1 has only 0 of 20 problems outside the warm-start stream"):
        load_problems(DataConfig(eval=[{**unseen, "levels": [1]}]), seed=0)
    with pytest.raises(ValueError, match="unseen needs a testbed source with per_level"):
        load_problems(DataConfig(eval=[{"path": "testbed:signs", "size": 5, "unseen": True}]), seed=0)


def test_the_default_run_config_loads_by_name():
    config = load_config("testbed:signs")
    assert config.model.name_or_path == "testbed:signs"
    assert config.data.train[0].path == config.data.eval[0].path == "testbed:signs"
    assert config.rollout.sampler == "compact"
    with pytest.raises(ValueError, match="no default run config"):
        load_config("testbed:carry")


# --- warm-start, committed policy and profile ---------------------------------------------------


def test_committed_warmstart_configs():
    from lensrl.training.warmstart import WarmStartConfig, committed_config

    assert committed_config("carry") == WarmStartConfig()  # the carry policy was built with the defaults
    signs_config = committed_config("signs")
    assert signs_config.testbed == "signs" and signs_config.steps == 1000
    with pytest.raises(ValueError, match="testbed must be one of carry, signs"):
        WarmStartConfig(testbed="nope")


def test_a_signs_warmstart_trains_on_the_teacher_s_problems(tmp_path):
    from lensrl.cli import main

    assert main(["testbed-build", "--testbed", "signs", "--steps", "2", "--output-dir", str(tmp_path / "p")]) == 0
    record = json.loads((tmp_path / "p" / "warmstart.json").read_text())
    assert record["config"]["testbed"] == "signs" and record["config"]["steps"] == 2
    assert "--testbed signs" in record["command"] and record["final_loss"] == record["final_loss"]  # not NaN


def _greedy(model, tokenizer, prompts):
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=64,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


def test_the_committed_policy_has_the_skill_under_practice_and_the_habit_under_the_task_prompt():
    # the design of the testbed: given the practice prompt the policy carries out the right procedure,
    # given the task prompt it mostly drops minus signs on the hardest level
    model, tokenizer = load_policy(ModelConfig(name_or_path="testbed:signs", device="cpu"))
    problems = signs.generate_problems(16, levels=(5,), seed=7)
    practice = _greedy(model, tokenizer, ["P:" + p.prompt[2:] for p in problems])
    task = _greedy(model, tokenizer, [p.prompt for p in problems])
    assert sum(verify_math(c, p.answer) for c, p in zip(practice, problems)) >= 12, practice
    dropped = sum(extract_answer(c) in signs.wrong_rule_answers(p) for c, p in zip(task, problems))
    assert dropped >= 12, task


def test_profile_measures_confidence_and_classifies_dropped_signs():
    profile = measure_profile("signs", problems_per_level=3, samples=4, levels=(4, 5), seed=0)
    assert profile.eval.n_problems == 6 and profile.responses == 24
    assert len(profile.pibar_right) + len(profile.pibar_wrong) == 24
    assert set(profile.pibar_rule_mistakes) <= set(profile.pibar_wrong)
    assert all(0 < p <= 1 for p in profile.pibar_right + profile.pibar_wrong)
    summary = profile.summary()
    assert 0.0 <= summary["lens_negative_group_share"] <= 1.0
    assert len(profile.negative_group_range) == round(profile.eval.all_wrong * 6)


def test_signs_checks_on_a_hand_made_profile():
    # 5 levels x 10 problems, G = 16: levels 4 and 5 hold all 12 negative groups (24% of 50)
    from lensrl.evaluation.evaluate import summarise

    problems = [Problem("Q:1-1\nA:", "0", level) for level in signs.LEVELS for _ in range(10)]
    n_correct = [16] * 10 + [8] * 10 + [4] * 10 + [0] * 4 + [2] * 6 + [0] * 8 + [1] * 2
    profile = Profile("signs", summarise(0, problems, n_correct, 16), unparseable=8, responses=800)
    checks = signs_checks(profile)
    assert checks["negative groups in [20%, 45%] of the mix"]  # 12 of 50 = 24%
    assert checks["over half of the negative groups on levels 4 and 5"]
    assert checks["responses without a final \\boxed{} <= 5%"]  # 1%
    # pass@1 = (160 + 80 + 40 + 12 + 2) / 800 = 36.75%; pass@16 = 38 / 50 = 76%
    assert checks["overall pass@1 in [15%, 40%]"] and checks["overall pass@16 >= 75%"]
    assert not signs_checks(Profile("signs", profile.eval, unparseable=80, responses=800))[
        "responses without a final \\boxed{} <= 5%"
    ]


def test_the_profile_command_prints_the_checks_and_writes_json(tmp_path, capsys):
    from lensrl.cli import main

    out = tmp_path / "profile.json"
    rc = main(
        [
            "testbed-profile",
            "--testbed",
            "signs",
            "--problems-per-level",
            "2",
            "--samples",
            "2",
            "--sampler",
            "compact",
            "--json",
            str(out),
        ]
    )
    record = json.loads(out.read_text())
    assert rc == (0 if all(record["checks"].values()) else 1)
    assert record["command"].startswith("lensrl testbed-profile --testbed signs")
    assert record["testbed"] == "signs" and record["n_problems"] == 10
    assert set(record["confidence"]) >= {
        "pibar_right",
        "pibar_wrong",
        "negative_group_pibar_range",
        "lens_negative_group_share",
        "unparseable",
    }
    printed = capsys.readouterr().out
    assert "pibar, wrong answers" in printed and "overall pass@1 in [15%, 40%]" in printed

"""The built-in testbed: problem generator, character tokenizer, warm-start and the committed policy."""

from __future__ import annotations

import random
import re
import string

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lensrl.data.answers import extract_answer
from lensrl.evaluation.profile import measure_profile
from lensrl.records import Problem
from lensrl.rollout.verify import verify_math
from lensrl.testbed import base_policy_path, build_tokenizer, generate_problems, make_problem
from lensrl.testbed.carry import MAX_NUMBER, MAX_TOTAL
from lensrl.training.sft import IGNORE_INDEX, encode_batch
from lensrl.training.warmstart import WarmStartConfig, build_base_policy, committed_config, rebuild_command

EXPRESSION = re.compile(r"\d+(?:[+-]\d+)*")


def evaluate(expression: str) -> int:
    """Value of a chain of integers joined by + and - (a tiny parser, never eval)."""
    if not EXPRESSION.fullmatch(expression):
        raise ValueError(f"not a +/- chain of integers: {expression!r}")
    return sum(int(term) for term in re.findall(r"[+-]?\d+", expression))


def running_totals(expression: str) -> list[int]:
    """Total after each term, left to right."""
    totals, total = [], 0
    for term in re.findall(r"[+-]?\d+", expression):
        total += int(term)
        totals.append(total)
    return totals


def expression_of(problem: Problem) -> str:
    match = re.fullmatch(r"Q:(.*)\nA:", problem.prompt)
    assert match is not None, problem.prompt
    return match.group(1)


# --- the tiny parser itself ---------------------------------------------------------------------


def test_evaluate_hand_worked_chain():
    # 17+79 = 96; 96-66 = 30; 30+4 = 34
    assert evaluate("17+79-66+4") == 34
    assert running_totals("17+79-66+4") == [17, 96, 30, 34]
    # 5-5 = 0: a chain may reach zero
    assert evaluate("5-5") == 0


def test_evaluate_rejects_anything_but_a_chain():
    for text in ("", "1+", "2*3", "__import__('os')", "1 + 2"):
        with pytest.raises(ValueError):
            evaluate(text)


# --- problems -----------------------------------------------------------------------------------


def test_seed_reproducibility():
    assert generate_problems(50, seed=7) == generate_problems(50, seed=7)


def test_different_seeds_give_different_problems():
    first = [p.prompt for p in generate_problems(50, seed=0)]
    second = [p.prompt for p in generate_problems(50, seed=1)]
    assert first != second


def test_global_random_state_is_untouched():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_problems(20, seed=0)
    assert random.random() == expected


def test_levels_cycle_evenly():
    problems = generate_problems(7, levels=(2, 5), seed=0)
    # problem i has level levels[i % 2]: 2, 5, 2, 5, 2, 5, 2
    assert [p.level for p in problems] == [2, 5, 2, 5, 2, 5, 2]
    assert [p.level for p in generate_problems(10, seed=3)] == [1, 2, 3, 4, 5] * 2


def test_generate_zero_problems():
    assert generate_problems(0) == []


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_problem_arithmetic_and_shape(level):
    rng = random.Random(level)
    for _ in range(200):
        problem = make_problem(level, rng)
        expression = expression_of(problem)
        terms = re.findall(r"\d+", expression)
        assert problem.level == level
        assert len(terms) == level + 1  # level L has L+1 terms
        assert all(1 <= int(term) <= MAX_NUMBER[level] for term in terms)
        assert all(0 <= total <= MAX_TOTAL for total in running_totals(expression))
        assert evaluate(expression) == int(problem.answer)


def test_solution_steps_are_correct_and_boxed():
    for problem in generate_problems(100, seed=11):
        *steps, boxed = problem.solution.split(" ")
        assert len(steps) == problem.level
        for step in steps:
            left, right = step.split("=")
            assert evaluate(left) == int(right)
        assert boxed == f"\\boxed{{{problem.answer}}}"
        assert extract_answer(problem.solution) == problem.answer
        assert verify_math(problem.solution, problem.answer)


class ScriptedRandom(random.Random):
    """A `random.Random` whose `randint` and `choice` return scripted values, in order."""

    def __init__(self, ints: list[int], ops: list[str]):
        super().__init__(0)
        self.ints, self.ops = list(ints), list(ops)

    def randint(self, a: int, b: int) -> int:
        value = self.ints.pop(0)
        assert a <= value <= b, (a, value, b)
        return value

    def choice(self, seq):
        return self.ops.pop(0)


def test_make_problem_hand_worked():
    # 17 +79 -66 +4: 17+79 = 96, 96-66 = 30, 30+4 = 34
    problem = make_problem(3, ScriptedRandom([17, 79, 66, 4], ["+", "-", "+"]))
    assert problem.prompt == "Q:17+79-66+4\nA:"
    assert problem.answer == "34"
    assert problem.solution == "17+79=96 96-66=30 30+4=34 \\boxed{34}"
    assert (problem.level, problem.id) == (3, "L3:17+79-66+4")


def test_make_problem_never_goes_below_zero():
    # 5-5 = 0; a scripted "-" cannot lower 0, so the generator flips it to "+": 0+3 = 3
    problem = make_problem(2, ScriptedRandom([5, 5, 3], ["-", "-"]))
    assert problem.prompt == "Q:5-5+3\nA:"
    assert problem.solution == "5-5=0 0+3=3 \\boxed{3}"


def test_solution_renders_one_step_per_operation():
    # e.g. "Q:17+79-66+4" -> "17+79=96 96-66=30 30+4=34 \\boxed{34}": rebuild that rendering from the
    # prompt's running totals and compare it with the generator's solution
    problem = make_problem(3, random.Random(0))
    expression = expression_of(problem)
    totals = running_totals(expression)
    ops_terms = re.findall(r"[+-]\d+", expression)
    expected_steps = [f"{totals[i]}{ops_terms[i]}={totals[i + 1]}" for i in range(3)]
    assert problem.solution == " ".join(expected_steps) + f" \\boxed{{{totals[-1]}}}"
    assert problem.id == f"L3:{expression}"
    assert "<eos>" not in problem.solution


@pytest.mark.parametrize("level", [0, 6, -1])
def test_invalid_level_raises(level):
    with pytest.raises(ValueError, match="level"):
        make_problem(level, random.Random(0))
    with pytest.raises(ValueError, match="level"):
        generate_problems(3, levels=(1, level))


def test_invalid_count_and_empty_levels_raise():
    with pytest.raises(ValueError, match="n must be"):
        generate_problems(-1)
    with pytest.raises(ValueError, match="levels"):
        generate_problems(3, levels=())


# --- tokenizer ----------------------------------------------------------------------------------


def test_tokenizer_round_trip():
    tokenizer = build_tokenizer()
    alphabet = "".join(chr(c) for c in range(32, 127)) + "\n"
    rng = random.Random(0)
    texts = ["", " ", "  a  ", "Q:17+79-66+4\nA:", "x , y . z ' ! ?", string.punctuation]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(100)]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text)  # one token per character
        assert tokenizer.decode(ids) == text


def test_tokenizer_special_tokens_and_padding():
    tokenizer = build_tokenizer()
    assert len(tokenizer) == 100  # 4 special tokens + newline + 95 printable characters
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "<eos>"
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["Q:1+2\nA:", "Q:10+2\nA:"], padding=True, add_special_tokens=False)
    # the shorter prompt (8 characters) is padded on the left to 9
    assert batch["input_ids"][0][0] == tokenizer.pad_token_id
    assert batch["attention_mask"][0] == [0] + [1] * 8
    ids = tokenizer("\\boxed{3}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "\\boxed{3}"


def test_tokenizer_save_and_load_with_auto_tokenizer(tmp_path):
    build_tokenizer().save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Q:301-259-38\nA:301-259=42 42-38=4 \\boxed{4}"
    assert loaded.decode(loaded(text, add_special_tokens=False)["input_ids"]) == text
    assert loaded.padding_side == "left"
    assert (loaded.pad_token_id, loaded.eos_token_id) == (0, 2)


# --- warm-start ---------------------------------------------------------------------------------

TINY = dict(steps=3, batch_size=10, micro_batch_size=5, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2)


def test_encode_batch_labels_only_solution_and_eos():
    tokenizer = build_tokenizer()
    problem = Problem(prompt="Q:1+2\nA:", answer="3", level=1, solution="1+2=3 \\boxed{3}")
    longer = Problem(prompt="Q:10+2\nA:", answer="12", level=1, solution="10+2=12 \\boxed{12}")
    input_ids, attention_mask, labels = encode_batch([problem, longer], tokenizer)
    # row 0: 8 prompt + 15 solution + 1 EOS = 24 tokens; row 1: 9 + 18 + 1 = 28 -> width 28
    assert input_ids.shape == (2, 28)
    assert attention_mask[0].tolist() == [0] * 4 + [1] * 24
    assert int((labels[0] != IGNORE_INDEX).sum()) == 16  # the solution and its EOS
    assert labels[0, -1] == tokenizer.eos_token_id
    assert tokenizer.decode(labels[0, -16:-1]) == problem.solution


def test_config_validates_levels():
    with pytest.raises(ValueError):
        WarmStartConfig(levels=(0, 1))
    with pytest.raises(ValueError):
        WarmStartConfig(steps=0)


def test_rebuild_command_names_only_what_differs_from_the_testbeds_committed_warmstart():
    assert rebuild_command("out", WarmStartConfig()) == "lensrl testbed-build --output-dir out"
    command = rebuild_command("out", WarmStartConfig(steps=10, levels=(1, 2), tie_word_embeddings=False))
    assert command.endswith("--steps 10 --levels 1 2 --no-tie-word-embeddings")
    signs = committed_config("signs")
    assert rebuild_command("out", signs) == "lensrl testbed-build --output-dir out --testbed signs"
    assert rebuild_command("out", signs.model_copy(update={"lr": 0.01})).endswith("--testbed signs --lr 0.01")


def test_testbed_build_has_a_flag_for_every_warmstart_field():
    from lensrl.cli import _WARMSTART_FLAGS

    fields = {name: f.annotation for name, f in WarmStartConfig.model_fields.items() if name != "testbed"}
    assert list(_WARMSTART_FLAGS) == list(fields)
    for name, (kind, _) in _WARMSTART_FLAGS.items():
        assert kind.__name__ in str(fields[name]), name


def test_warmstart_is_deterministic_and_trains(tmp_path):
    config = WarmStartConfig(**TINY)
    first = build_base_policy(tmp_path / "a", config, progress=False)
    second = build_base_policy(tmp_path / "b", config, progress=False)
    other_seed = build_base_policy(tmp_path / "c", WarmStartConfig(**TINY, seed=1), progress=False)
    weights = [AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (first, second, other_seed)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    assert any(not torch.equal(t, weights[2][n]) for n, t in weights[0].items())
    assert (first / "warmstart.json").is_file() and (first / "model.safetensors").is_file()


def test_warmstart_changes_the_parameters():
    from lensrl.training.warmstart import build_model, train_policy

    config = WarmStartConfig(**TINY)
    tokenizer = build_tokenizer()
    initial = build_model(config, tokenizer).state_dict()  # same seed -> same init as training
    trained, loss = train_policy(config, tokenizer, progress=False)
    assert loss == loss  # not NaN
    changed = [not torch.equal(initial[n], t) for n, t in trained.state_dict().items()]
    assert all(changed)


# --- the committed base policy ------------------------------------------------------------------


def test_base_policy_is_committed_and_small():
    path = base_policy_path()
    assert path.name == "carry_policy" and (path / "model.safetensors").is_file()
    assert sum(f.stat().st_size for f in path.iterdir()) <= 20 * 2**20


def test_a_missing_base_policy_is_an_error_that_says_how_to_rebuild_it(tmp_path, monkeypatch):
    # loading a policy never trains one: without the committed weights, "testbed" is a clear error
    import lensrl.testbed
    import lensrl.training.warmstart
    from lensrl.config import ModelConfig
    from lensrl.policy.models import load_policy

    def no_build(*args, **kwargs):
        raise AssertionError("loading a model must not train one")

    monkeypatch.setitem(lensrl.testbed.POLICY_FOLDERS, "carry", str(tmp_path / "missing"))
    monkeypatch.setattr(lensrl.training.warmstart, "build_base_policy", no_build)
    with pytest.raises(ValueError, match="lensrl testbed-build --testbed carry --output-dir DIR"):
        load_policy(ModelConfig(name_or_path="testbed"))


def test_base_policy_greedily_solves_level_one():
    path = base_policy_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    problems = generate_problems(8, levels=(1,), seed=2024)
    batch = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=32,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    completions = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert all("\\boxed{" in c for c in completions)
    solved = sum(verify_math(c, p.answer) for c, p in zip(completions, problems))
    assert solved >= 6, list(zip([p.prompt for p in problems], completions))


def test_measure_profile_smoke():
    profile = measure_profile("carry", base_policy_path(), problems_per_level=2, samples=2, levels=(1,), seed=0)
    result = profile.eval
    assert set(result.per_level) == {"1"}
    assert 0.0 <= result.overall["pass@1"] <= 1.0
    assert result.n_problems == 2
    assert len(profile.pibar_right) + len(profile.pibar_wrong) == profile.responses == 4

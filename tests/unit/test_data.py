"""Problem sources: layout presets, file formats, slices, filters, sampling, mixtures and clear errors."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lensrl.config import DataConfig, SourceConfig
from lensrl.data.answers import extract_answer
from lensrl.data.sources import EVAL_SEED, Problem, load_jsonl, load_problems, load_source
from lensrl.testbed import generate_problems

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED_DATA / "math500.jsonl").exists(), reason="shared data copy not present")


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


SUBJECTS = ["Algebra", "Counting & Probability"]


def _numbered(tmp_path, n=10, name="n.jsonl"):
    """n MATH-style rows q0..q{n-1} with levels 1,2,3,1,2,3,... and alternating subjects."""
    rows = [{"problem": f"q{i}", "answer": str(i), "level": 1 + i % 3, "subject": SUBJECTS[i % 2]} for i in range(n)]
    return _write(tmp_path / name, rows)


# ------------------------------------------------------------------------------------ presets


def test_math_preset_level_strings_subject_type_and_answer_from_the_box(tmp_path):
    solution = "It is $\\boxed{\\frac{1}{2}}$, not $\\boxed{2}$... so $\\boxed{\\frac{1}{2}}$."
    path = _write(
        tmp_path / "m.jsonl",
        [
            {"problem": "Half of 1?", "solution": solution, "level": "Level 3", "type": "Algebra"},
            {
                "problem": "P2",
                "answer": " 5 ",
                "solution": "so \\boxed{5}",
                "level": "Level ?",
                "subject": "Geometry",
                "unique_id": "test/geometry/1.json",
            },
            {"problem": "P3", "answer": "7", "level": None, "solution": "s"},
            {"problem": "P4", "answer": "8", "level": 4, "solution": "s"},
        ],
    )
    p = load_source(SourceConfig(path=str(path)))  # auto -> math
    assert p[0] == Problem(
        prompt="Half of 1?", answer="\\frac{1}{2}", level=3, id="m.jsonl:1", subject="Algebra", solution=solution
    )
    assert (p[1].answer, p[1].level, p[1].subject, p[1].id) == ("5", None, "Geometry", "test/geometry/1.json")
    assert [q.level for q in p[2:]] == [None, 4]
    assert load_source(SourceConfig(path=str(path), kind="math")) == p


def test_gsm8k_hf_layout_answer_holds_the_worked_solution(tmp_path):
    row = {
        "question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
        "answer": "In May: 48/2 = <<48/2=24>>24 clips.\n"
        "In all: 48+24 = <<48+24=72>>72 clips, i.e. 1,072 cents.\n#### 1,072",
    }
    [p] = load_source(SourceConfig(path=str(_write(tmp_path / "g.jsonl", [row]))))
    assert p.prompt == row["question"]
    assert p.answer == "1072"
    assert p.solution == (
        "In May: 48/2 = 24 clips.\nIn all: 48+24 = 72 clips, i.e. 1,072 cents.\nThe final answer is \\boxed{1072}."
    )
    assert (p.level, p.subject, p.id) == (None, None, "g.jsonl:1")


def test_gsm8k_local_layout(tmp_path):
    row = {
        "idx": 7,
        "question": "Weng earns $12 an hour. 50 minutes?",
        "solution": "Per minute: 12/60 = $<<12/60=0.2>>0.2.\nSo 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10",
        "answer": "10",
    }
    [p] = load_source(SourceConfig(path=str(_write(tmp_path / "g.jsonl", [row])), kind="gsm8k"))
    assert (p.answer, p.id, p.level) == ("10", "7", None)
    assert p.solution == "Per minute: 12/60 = $0.2.\nSo 0.2 x 50 = $10.\nThe final answer is \\boxed{10}."
    assert extract_answer(p.solution) == "10"


DAPO_WRAPPED = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
    "Find the number of integers $x$ with $x^2 < 10$."
    '\n\nRemember to put your answer on its own line after "Answer:".'
)


def test_dapo_nested_layout_strips_the_instruction_wrapper(tmp_path):
    nested = {
        "data_source": "math_dapo",
        "ability": "MATH",
        "extra_info": {"index": "9a"},
        "prompt": [{"role": "user", "content": DAPO_WRAPPED}],
        "reward_model": {"ground_truth": "7", "style": "rule-lm"},
    }
    [p] = load_source(SourceConfig(path=str(_write(tmp_path / "d.jsonl", [nested]))))  # auto -> dapo
    assert p == Problem(prompt="Find the number of integers $x$ with $x^2 < 10$.", answer="7", id="d.jsonl:1")


def test_dapo_flat_rows(tmp_path):
    rows = [{"prompt": DAPO_WRAPPED, "solution": "7"}, {"prompt": "Find y.", "answer": "3"}]
    path = _write(tmp_path / "d.jsonl", rows)
    p = load_source(SourceConfig(path=str(path), kind="dapo"))
    assert [(q.prompt, q.answer) for q in p] == [
        ("Find the number of integers $x$ with $x^2 < 10$.", "7"),
        ("Find y.", "3"),
    ]


def test_custom_layout_with_dotted_fields(tmp_path):
    row = {"q": {"text": "2+3?"}, "meta": {"gold": 5, "difficulty": 2, "topic": "arithmetic"}, "id": "c1"}
    source = SourceConfig(
        path=str(_write(tmp_path / "c.jsonl", [row])),
        prompt_field="q.text",
        answer_field="meta.gold",
        level_field="meta.difficulty",
        subject_field="meta.topic",
    )
    [p] = load_source(source)  # auto -> custom
    assert p == Problem(prompt="2+3?", answer="5", level=2, id="c1", subject="arithmetic")


def test_load_jsonl_keeps_its_field_arguments(tmp_path):
    rows = [{"question": "1+1?", "answer": 2, "level": 1}, {"question": "2+2?", "answer": "4"}]
    path = _write(tmp_path / "p.jsonl", rows)
    problems = load_jsonl(path, prompt_field="question", level_field="level", kind="custom")
    assert [(p.prompt, p.answer, p.level) for p in problems] == [("1+1?", "2", 1), ("2+2?", "4", None)]


# ------------------------------------------------------------------------------- file formats


def test_json_list_and_data_object(tmp_path):
    rows = [{"problem": "a", "answer": "1", "level": 2}, {"problem": "b", "answer": "2", "level": 5}]
    (tmp_path / "l.json").write_text(json.dumps(rows))
    (tmp_path / "o.json").write_text(json.dumps({"data": rows}))
    for name in ("l.json", "o.json"):
        p = load_source(SourceConfig(path=str(tmp_path / name)))
        assert [(q.prompt, q.answer, q.level, q.id) for q in p] == [
            ("a", "1", 2, f"{name}:0"),
            ("b", "2", 5, f"{name}:1"),
        ]
    (tmp_path / "bad.json").write_text(json.dumps([{"problem": "a", "answer": "1"}, {"problem": "b"}]))
    with pytest.raises(ValueError, match=r"bad\.json:1: missing or empty field 'answer'"):
        load_source(SourceConfig(path=str(tmp_path / "bad.json")))


def test_parquet_with_nested_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {"prompt": [{"role": "user", "content": DAPO_WRAPPED}], "reward_model": {"ground_truth": "7", "style": "r"}},
        {"prompt": [{"role": "user", "content": "Find z."}], "reward_model": {"ground_truth": "-1", "style": "r"}},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    p = load_source(SourceConfig(path=str(tmp_path / "d.parquet"), rows="1:"))
    assert [(q.prompt, q.answer, q.id) for q in p] == [("Find z.", "-1", "d.parquet:1")]
    rows[1]["reward_model"]["ground_truth"] = ""
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet:1: missing or empty field 'reward_model\.ground_truth'"):
        load_source(SourceConfig(path=str(tmp_path / "bad.parquet")))


# ------------------------------------------------------------------ slices, filters, sampling


def test_rows_slices_make_disjoint_hold_out_splits(tmp_path):
    path = _numbered(tmp_path)
    train = load_source(SourceConfig(path=str(path), rows="0:-3"))
    held = load_source(SourceConfig(path=str(path), rows="-3:"))
    assert [p.prompt for p in train] == [f"q{i}" for i in range(7)]
    assert [p.prompt for p in held] == ["q7", "q8", "q9"]
    assert [p.id for p in held] == ["n.jsonl:8", "n.jsonl:9", "n.jsonl:10"]  # line numbers, not slice positions


def test_rows_slice_comes_before_parsing(tmp_path):
    path = _write(tmp_path / "p.jsonl", [{"problem": "a", "answer": "1"}, "{broken", {"problem": "c", "answer": "3"}])
    assert [p.prompt for p in load_source(SourceConfig(path=str(path), rows="2:"))] == ["c"]


def test_levels_subjects_and_per_level(tmp_path):
    path = _numbered(tmp_path, 12)  # levels 1,2,3,1,2,3,...; subjects Algebra / C&P alternating
    assert [p.prompt for p in load_source(SourceConfig(path=str(path), levels=[2]))] == ["q1", "q4", "q7", "q10"]
    cp = load_source(SourceConfig(path=str(path), subjects=["counting_and_probability"]))
    assert [p.prompt for p in cp] == [f"q{i}" for i in range(1, 12, 2)]
    both = load_source(SourceConfig(path=str(path), levels=[1, 3], subjects=["algebra"]))
    assert [p.prompt for p in both] == ["q0", "q2", "q6", "q8"]
    capped = load_source(SourceConfig(path=str(path), levels=[1, 2], per_level=2))
    assert [p.prompt for p in capped] == ["q0", "q1", "q3", "q4"]  # first two of each level, in source order


def test_size_sample_is_seeded_and_repeats_only_when_needed(tmp_path):
    source = SourceConfig(path=str(_numbered(tmp_path, 10)), size=4)
    a, b, c = load_source(source, seed=0), load_source(source, seed=0), load_source(source, seed=1)
    assert a == b and a != c
    assert len(a) == 4 and len({p.id for p in a}) == 4
    whole = load_source(source.model_copy(update={"size": 10}), seed=3)
    assert sorted(p.prompt for p in whole) == sorted(f"q{i}" for i in range(10))
    up = load_source(source.model_copy(update={"size": 25}), seed=0)
    counts = Counter(p.prompt for p in up)
    assert len(up) == 25 and len(counts) == 10 and set(counts.values()) == {2, 3}
    assert sum(v == 3 for v in counts.values()) == 5


def test_two_source_mixture_and_seed_independent_eval(tmp_path):
    a, b = _numbered(tmp_path, 10, "a.jsonl"), _numbered(tmp_path, 3, "b.jsonl")
    config = DataConfig(
        train=[SourceConfig(path=str(a), size=6), SourceConfig(path=str(b), size=9)],
        eval=[SourceConfig(path=str(a), levels=[3], size=2), "testbed"],
    )
    train, evals = load_problems(config, seed=0)
    assert len(train) == 15
    assert Counter(p.id.split(":")[0] for p in train) == {"a.jsonl": 6, "b.jsonl": 9}
    assert Counter(p.prompt for p in train[6:]) == {"q0": 3, "q1": 3, "q2": 3}
    train1, evals1 = load_problems(config, seed=1)
    assert train1 != train and evals1 == evals  # eval sampling does not depend on the run seed
    assert len(evals) == 2 + 500 and {p.level for p in evals[:2]} == {3}


def test_testbed_sources():
    config = DataConfig(train="testbed", eval={"path": "testbed", "levels": [4, 5], "per_level": 3})
    assert config.train[0].size == 20_000
    train, evals = load_problems(config.model_copy(update={"train": [SourceConfig(size=7, levels=[2])]}), seed=5)
    assert train == generate_problems(7, [2], seed=5)
    assert evals == generate_problems(6, [4, 5], seed=EVAL_SEED)
    assert sorted(p.level for p in evals) == [4, 4, 4, 5, 5, 5]
    _, default_evals = load_problems(DataConfig(), seed=9)
    assert default_evals == generate_problems(500, seed=EVAL_SEED)
    with pytest.raises(ValueError, match="size"):
        load_source(SourceConfig(path="testbed"))


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "rows, match",
    [
        ([{"problem": "a", "answer": "1"}, "{not json"], r"p\.jsonl:2: not valid JSON"),
        ([{"problem": "a"}], r"p\.jsonl:1: missing or empty field 'answer'"),
        ([{"problem": "  ", "answer": "1"}], r"p\.jsonl:1: missing or empty field 'problem'"),
        ([[1, 2]], r"p\.jsonl:1: expected a JSON object"),
        (
            [{"problem": "a", "answer": "1", "level": 1}, {"problem": "b", "answer": "1", "level": 7}],
            r"p\.jsonl:2: field 'level' is 7, not a level 1\.\.5",
        ),
        ([{"problem": "a", "answer": "1", "level": "hard"}], r"p\.jsonl:1: field 'level' is 'hard'"),
        ([{"problem": "a", "answer": [1], "level": 1}], r"p\.jsonl:1: field 'answer' holds a list"),
        ([{"problem": "a", "solution": "no box", "level": 1}], r"p\.jsonl:1: missing .*'answer' and no \\boxed"),
        ([""], "is empty: it holds no rows"),  # blank lines only
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, rows, match):
    with pytest.raises(ValueError, match=match):
        load_source(SourceConfig(path=str(_write(tmp_path / "p.jsonl", rows))))


def test_skip_bad_rows_skips_counts_and_warns_once(tmp_path):
    path = _write(
        tmp_path / "p.jsonl",
        [{"problem": "a", "answer": "1"}, "{oops", {"problem": "b"}, [3], {"problem": "c", "answer": "3"}],
    )
    config = DataConfig(train={"path": "testbed", "size": 4}, eval=str(path), skip_bad_rows=True)
    first = r"skipped 3 malformed row\(s\); the first: .*p\.jsonl:2: not valid JSON"
    with pytest.warns(UserWarning, match=first) as rec:
        _, evals = load_problems(config, 0)
    assert len(rec) == 1
    assert [p.prompt for p in evals] == ["a", "c"]


def test_empty_after_filtering_names_source_and_filters(tmp_path):
    path = _numbered(tmp_path, 6)
    with pytest.raises(ValueError, match=r"n\.jsonl' \(levels=\[5\], subjects=\['Algebra'\]\) has no problems left"):
        load_source(SourceConfig(path=str(path), levels=[5], subjects=["Algebra"]))


@pytest.mark.parametrize("name, text", [("e.jsonl", ""), ("e.json", "[]")])
def test_empty_file_is_a_clear_error(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=rf"{name}' is empty: it holds no rows"):
        load_source(SourceConfig(path=str(tmp_path / name)))


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.jsonl: no such file"):
        load_source(SourceConfig(path=str(tmp_path / "nope.jsonl")))
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        load_source(SourceConfig(path=str(_write(tmp_path / "x.csv", ["a,b"]))))


def test_unreachable_hub_id_is_a_clear_error(monkeypatch):
    # In a fresh interpreter, so that the offline switch is read at import time and nothing waits on the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = (
        "from lensrl.config import SourceConfig; from lensrl.data.sources import load_source\n"
        "try:\n    load_source(SourceConfig(path='nobody-lensrl/no-such-dataset'))\n"
        "except ValueError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "could not load Hugging Face dataset 'nobody-lensrl/no-such-dataset'" in out.stdout
    assert "hub may be unreachable" in out.stdout and "local .json/.jsonl/.parquet file" in out.stdout


# ------------------------------------------------------------------------- the real data files


@needs_shared
def test_real_math_train():
    source = SourceConfig(path=str(SHARED_DATA / "math_train.jsonl"))
    # two rows of the original (train/number_theory/7115 and 7117) have an empty \boxed{} and no answer
    with pytest.raises(ValueError, match=r"math_train\.jsonl:5342: missing or empty field 'answer'"):
        load_source(source)
    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        problems = load_source(source, skip_bad_rows=True)
    assert len(problems) == 7_498
    assert sum(p.level is None for p in problems) == 2
    assert {p.subject for p in problems} >= {"Algebra", "Counting & Probability", "Precalculus"}
    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        assert len(load_source(source.model_copy(update={"levels": [1, 2, 3, 4, 5]}), skip_bad_rows=True)) == 7_496


@needs_shared
def test_real_math500_levels():
    problems = load_source(SourceConfig(path=str(SHARED_DATA / "math500.jsonl")))
    assert len(problems) == 500 and len({p.id for p in problems}) == 500
    assert [n for _, n in sorted(Counter(p.level for p in problems).items())] == [43, 90, 105, 128, 134]
    hard = load_source(SourceConfig(path=str(SHARED_DATA / "math500.jsonl"), levels=[4, 5]))
    assert len(hard) == 262
    assert load_source(SourceConfig(path=str(SHARED_DATA / "math500.jsonl"), per_level=10))[0].id == problems[0].id


@needs_shared
def test_real_gsm8k_normalised_solutions():
    problems = load_source(SourceConfig(path=str(SHARED_DATA / "gsm8k_train.jsonl")))
    assert len(problems) == 7_473
    for p in problems:
        assert p.solution.count("\\boxed{") == 1 and "<<" not in p.solution and "####" not in p.solution, p.id
        assert extract_answer(p.solution) == p.answer, p.id

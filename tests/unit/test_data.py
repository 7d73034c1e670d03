"""Problem files: JSON Lines loading, clear errors, and per-level eval caps."""

import json
from pathlib import Path

import pytest

from lensrl.config import DataConfig
from lensrl.data import load_jsonl, load_problems

SHARED_MATH500 = Path(__file__).resolve().parents[3] / "shared" / "data" / "math500.jsonl"


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_load_jsonl_fields_and_template(tmp_path):
    path = _write(tmp_path / "p.jsonl", [{"question": "1+1?", "answer": 2, "level": 1}, {"question": "2+2?", "answer": "4"}])
    problems = load_jsonl(path, prompt_field="question", prompt_template="Q: {prompt}\nA:")
    assert problems[0].prompt == "Q: 1+1?\nA:" and problems[0].answer == "2" and problems[0].level == 1
    assert problems[1].level is None


@pytest.mark.parametrize(
    "rows, match",
    [
        ([{"problem": "a", "answer": "1"}, "{not json"], r"p\.jsonl:2: not valid JSON"),
        ([{"problem": "a"}], r"p\.jsonl:1: missing or empty field 'answer'"),
        ([[1, 2]], r"p\.jsonl:1: expected a JSON object"),
        ([""], "no problems"),
    ],
)
def test_load_jsonl_errors_name_file_and_line(tmp_path, rows, match):
    with pytest.raises(ValueError, match=match):
        load_jsonl(_write(tmp_path / "p.jsonl", rows))


def test_eval_file_capped_per_level(tmp_path):
    rows = [{"problem": f"q{i}", "answer": "1", "level": 1 + i % 3} for i in range(30)]
    path = _write(tmp_path / "e.jsonl", rows)
    _, evals = load_problems(DataConfig(train=str(path), eval=str(path), eval_levels=[1, 2], eval_per_level=4), 0)
    assert sorted(p.level for p in evals) == [1] * 4 + [2] * 4


@pytest.mark.skipif(not SHARED_MATH500.exists(), reason="shared MATH-500 copy not present")
def test_math500_loads_with_levels():
    problems = load_jsonl(SHARED_MATH500)
    assert len(problems) == 500
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}

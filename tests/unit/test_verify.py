"""The verifier: final-answer extraction and Math-Verify equivalence, with right and wrong examples."""

import time

import pytest

from lensrl import extract_answer, verify_math


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("17+79=96 96-66=30 30+4=34 \\boxed{34}", "34"),
        ("so the answer is \\boxed{\\frac{1}{2}}", "0.5"),
        ("first \\boxed{3} then corrected \\boxed{4}", "4"),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
    ],
)
def test_right_answers(completion, gold):
    assert verify_math(completion, gold)


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("17+79=96 \\boxed{35}", "34"),
        ("first \\boxed{4} then \\boxed{3}", "4"),  # only the last box counts
        ("the answer is 34", "34"),  # no final-answer marker
        ("\\boxed{34", "34"),  # unbalanced
        ("", "34"),
    ],
)
def test_wrong_answers(completion, gold):
    assert not verify_math(completion, gold)


def test_extract_answer_nested_braces():
    assert extract_answer("x \\boxed{\\frac{a}{b}} y") == "\\frac{a}{b}"
    assert extract_answer("\\boxed{1} and \\boxed{2") == "1"  # an unbalanced last box falls back
    assert extract_answer("nothing here") is None


def test_hostile_strings_fail_fast():
    hostile = ["\\boxed{" + "{" * 5000 + "}", "\\boxed{9^{9^{9^{9^{9}}}}}", "\\boxed{" + "1" * 10_000 + "}",
               "\\boxed{\\frac{" * 200, "#### " + "9" * 100_000]
    for s in hostile:
        t0 = time.perf_counter()
        assert verify_math(s, "34") is False
        assert time.perf_counter() - t0 < 10


def test_many_unbalanced_boxes_give_no_answer():
    # 10,000 unbalanced openings: only the last few are tried, so this stays linear-time
    assert extract_answer("\\boxed{34} " + "\\boxed{" * 10_000) is None
    assert extract_answer("\\boxed{34} " + "\\boxed{" * 3) == "34"

"""Fuzzing the verifier: arbitrary text and LaTeX-ish fragments never raise, and give a str/None and a bool."""

from hypothesis import given, settings
from hypothesis import strategies as st

from lensrl.data.answers import extract_answer
from lensrl.rollout.verify import MATH_VERIFIER, verify_math

FRAGMENTS = [
    "\\boxed{",
    "{",
    "}",
    "\\frac",
    "\\dfrac",
    "\\sqrt",
    "^",
    "_",
    "!",
    "1",
    "2",
    "9",
    "0.5",
    "-",
    "+",
    "x",
    "=",
    ",",
    "(",
    ")",
    "[",
    "]",
    "\\{",
    "\\}",
    "\\pi",
    "\\infty",
    "\\%",
    "^\\circ",
    "\\text{",
    "\\left(",
    "\\right)",
    "\\cdot",
    "\\\\",
    "&",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "\\def",
    "\\input",
    "####",
    " ",
    "\n",
    "\x00",
    "$",
]
latexish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
fuzz = settings(max_examples=200, deadline=None, database=None)


@fuzz
@given(st.one_of(st.text(), latexish))
def test_extract_answer_never_raises(completion):
    answer = extract_answer(completion)
    assert answer is None or (isinstance(answer, str) and len(answer) <= len(completion))


@fuzz
@given(
    st.one_of(st.text(max_size=200), latexish.map(lambda s: f"\\boxed{{{s}}}")),
    st.sampled_from(["34", "\\frac{1}{2}", "x"]),
)
def test_verify_math_never_raises(completion, gold):
    calls = MATH_VERIFIER.counts.calls
    verdict = verify_math(completion, gold, timeout_s=0.5)
    assert isinstance(verdict, bool)
    assert MATH_VERIFIER.counts.calls == calls + 1
    if extract_answer(completion) is None:
        assert verdict is False


@fuzz
@given(latexish)
def test_a_balanced_answer_matches_itself(answer):
    boxed = extract_answer(f"\\boxed{{{answer}}}")
    if boxed and len(boxed) <= 256 and boxed == answer.strip():  # its braces balance
        assert verify_math(f"\\boxed{{{answer}}}", answer)  # the same string: no parsing needed

"""The verifier: final-answer extraction, Math-Verify equivalence, the worker's hard time limit and memory
bound, and the outcome counters."""

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import math_verify
import math_verify.grader
import pytest

from lensrl import extract_answer, verify_math
from lensrl.rollout.verifier import VerifyCounts
from lensrl.rollout.verify import (
    MATH_VERIFIER,
    MAX_ANSWER_CHARS,
    MEMORY_LIMIT_BYTES,
    WORKER,
    MathVerifier,
    MathVerifyWorker,
)

SHARED_MATH500 = Path(__file__).resolve().parents[3] / "shared" / "data" / "math500.jsonl"
MARGIN_S = 5.0  # safety bound on top of the time limit (a loaded machine, a worker kill), not a benchmark
ATTEMPTS = 2  # a timed-out check is retried once, so a call can take two time limits
needs_posix_signals = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")


_fresh = itertools.count(1000)


def _worker_pid() -> int:
    n = next(_fresh)  # a pair not seen before, so not memoised: it needs the worker, which starts if there is none
    assert verify_math(f"\\boxed{{\\frac{{{n}}}{{{2 * n}}}}}", "0.5")
    assert WORKER.pid is not None
    return WORKER.pid


def _kill(pid: int) -> None:
    process = WORKER._process
    assert process is not None and process.pid == pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _counts() -> VerifyCounts:
    """The default verifier's counts now (`verify_math` counts there)."""
    return MATH_VERIFIER.counts.copy()


def _delta(before: VerifyCounts) -> dict[str, int]:
    return {k: v for k, v in dataclasses.asdict(MATH_VERIFIER.counts - before).items() if v}


@pytest.mark.parametrize(
    "completion, gold",
    [
        ("17+79=96 96-66=30 30+4=34 \\boxed{34}", "34"),
        ("so the answer is \\boxed{\\frac{1}{2}}", "0.5"),
        ("first \\boxed{3} then corrected \\boxed{4}", "4"),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
        ("#### 1,234", "1234"),
        ("\\boxed{1,234}", "1234"),
        ("\\boxed{0.50}", "0.5"),
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
        ("\\boxed{1,2}", "12"),  # a pair, not a thousands separator
    ],
)
def test_wrong_answers(completion, gold):
    assert not verify_math(completion, gold)


# (answer, gold, Math-Verify's verdict, worked out by hand and confirmed against Math-Verify 0.9)
ORDINARY_PAIRS = [
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac12", "1/2", True),
    ("3\\sqrt{2}", "\\sqrt{18}", True),
    ("2\\sqrt{2}", "\\sqrt{18}", False),
    ("x=5", "5", True),
    ("5", "x=5", True),
    ("(1,2]", "(1, 2]", True),
    ("[1,2)", "(1,2]", False),
    ("(-\\infty, 3)", "(-\\infty,3)", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("30^\\circ", "30", True),
    ("50\\%", "50", True),
    ("0.5", "50\\%", True),  # a percent gold also accepts the fraction
    ("\\text{(A)}", "A", True),
    ("2\\pi", "6.283185", True),
    ("1/3", "0.333", False),
    ("0.3333333", "0.333333", True),  # unequal decimals: Math-Verify rounds to 6 places
    ("3.14", "3.14159", False),
    ("007", "7", True),
    ("-0", "0", True),
    ("1234567", "1234568", False),
    ("1,000.5", "1000.5", True),
    ("0,500", "500", False),  # Math-Verify reads a comma after a 0 as a decimal comma
    ("10", "10.0", True),
    ("1e3", "1000", False),
]


@pytest.mark.parametrize("answer, gold, expected", ORDINARY_PAIRS)
def test_agrees_with_math_verify(answer, gold, expected):
    reference = math_verify.verify(math_verify.parse(f"\\boxed{{{gold}}}"), math_verify.parse(f"\\boxed{{{answer}}}"))
    assert reference == expected
    assert verify_math(f"so the answer is \\boxed{{{answer}}}.", gold) == expected


@pytest.mark.skipif(not SHARED_MATH500.exists(), reason="shared MATH-500 copy not present")
def test_math500_golds_accept_themselves():
    golds = [json.loads(line)["answer"] for line in SHARED_MATH500.read_text().splitlines() if line.strip()]
    assert len(golds) == 500
    assert [g for g in golds if not verify_math(f"Therefore the answer is $\\boxed{{{g}}}$.", g)] == []


def test_extract_answer_nested_braces():
    assert extract_answer("x \\boxed{\\frac{a}{b}} y") == "\\frac{a}{b}"
    assert extract_answer("\\boxed{1} and \\boxed{2") == "1"  # an unbalanced last box falls back
    assert extract_answer("\\boxed{1} and \\boxed{\\boxed{2}") == "2"  # the last balanced one
    assert extract_answer("\\boxed{a\\boxed{b}") == "b"
    assert extract_answer("nothing here") is None
    assert extract_answer("text\n#### 1,000\nmore") == "1000"


def test_many_unbalanced_boxes_give_no_answer():
    # 10,000 unbalanced openings: only the last few are tried, so this stays linear-time
    assert extract_answer("\\boxed{34} " + "\\boxed{" * 10_000) is None
    assert extract_answer("\\boxed{34} " + "\\boxed{" * 3) == "34"


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "executed"
    yield path
    assert not path.exists(), "model output was executed"


HOSTILE = {
    "power tower": "\\boxed{9^{9^{9^{9}}}}",
    "huge power": "\\boxed{2^{10^{10}}}",
    "huge factorial": "\\boxed{10^{10^{100}}!}",
    "factorial of a power": "\\boxed{(9^{9^{9}})!}",
    "deep braces": "\\boxed{" + "{" * 120 + "1" + "}" * 120 + "}",
    "deep fractions": "\\boxed{" + "\\frac{1}{" * 25 + "2" + "}" * 25 + "}",
    "unbalanced braces": "\\boxed{" + "{" * 5000 + "}",
    "unbalanced fractions": "\\boxed{\\frac{" * 200,
    "unbalanced boxes": "\\boxed{" * 5000,
    "1 MB box": "\\boxed{" + "1" * 1_000_000 + "}",
    "1 MB of braces": "\\boxed{" * 20 + "{" * 1_000_000,
    "1 MB of text": "x" * 1_000_000,
    "1 MB gsm8k": "#### " + "9" * 1_000_000,
    "null bytes": "\\boxed{3\x004}",
    "control characters": "\\boxed{" + "".join(map(chr, range(1, 32))) + "}",
    "def": "\\boxed{\\def\\x{\\x\\x}\\x}",
    "input": "\\boxed{\\input{/etc/passwd}}",
}
CODE = [
    "\\boxed{__import__('os').system('touch {marker}')}",
    "#### __import__('os').system('touch {marker}')",
    "\\boxed{eval(\"open('{marker}', 'w')\")}",
    "\\boxed{1+__import__('os').system('touch {marker}')}",
]


@pytest.mark.parametrize("completion", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_answers_are_wrong_within_the_time_limit(completion):
    _worker_pid()  # the worker's start-up is not part of a call's time limit
    start = time.monotonic()
    assert verify_math(completion, "34", timeout_s=1.0) is False
    assert time.monotonic() - start < ATTEMPTS * (1.0 + MARGIN_S)


@pytest.mark.parametrize("template", CODE)
def test_code_in_answers_is_never_executed(template, marker):
    start = time.monotonic()
    assert verify_math(template.replace("{marker}", str(marker)), "0", timeout_s=1.0) is False
    assert time.monotonic() - start < ATTEMPTS * (1.0 + MARGIN_S)


def test_a_slow_comparison_times_out_twice_is_not_memoised_and_the_next_call_works():
    _worker_pid()
    before = _counts()
    start = time.monotonic()
    assert verify_math("\\boxed{2^{10^{10}} + 1}", "1", timeout_s=1.0) is False
    assert time.monotonic() - start < ATTEMPTS * (1.0 + MARGIN_S)
    assert _delta(before) == {"calls": 1, "timeouts": 2, "retries": 1}  # the worker's own alarm: no restart
    assert verify_math("again \\boxed{2^{10^{10}} + 1}", "1", timeout_s=1.0) is False  # checked again
    assert _delta(before) == {"calls": 2, "timeouts": 4, "retries": 2}
    assert verify_math("\\boxed{\\frac{6}{12}}", "0.5")


@needs_posix_signals
def test_a_stuck_worker_is_killed_at_the_time_limit_and_the_retry_restarts_it():
    pid = _worker_pid()
    before = _counts()
    os.kill(pid, signal.SIGSTOP)  # stuck as in C code: not even its own alarm can stop it
    start = time.monotonic()
    assert verify_math("\\boxed{\\frac{2}{4}}", "0.5", timeout_s=1.0) is True  # the retry, in a new worker
    assert time.monotonic() - start < ATTEMPTS * (1.0 + MARGIN_S)
    assert _delta(before) == {"calls": 1, "timeouts": 1, "retries": 1, "worker_restarts": 1}
    assert verify_math("\\boxed{\\frac{3}{6}}", "1/2")
    assert _delta(before) == {"calls": 2, "timeouts": 1, "retries": 1, "worker_restarts": 1}
    assert _worker_pid() != pid


@needs_posix_signals
def test_a_worker_killed_from_outside_is_restarted():
    pid = _worker_pid()
    _kill(pid)
    before = _counts()
    assert verify_math("\\boxed{\\frac{4}{8}}", "0.5")
    assert _delta(before) == {"calls": 1, "worker_restarts": 1}


@needs_posix_signals
def test_a_worker_dying_mid_request_is_an_error():
    pid = _worker_pid()
    before = _counts()
    killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    killer.start()
    start = time.monotonic()
    assert verify_math("\\boxed{9^{9^{9^{9}}} + 2}", "1", timeout_s=10.0) is False
    assert time.monotonic() - start < 5.0  # the parent notices the death, not the time limit
    killer.join()
    assert _delta(before) == {"calls": 1, "errors": 1}
    assert verify_math("\\boxed{\\frac{5}{10}}", "0.5")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs Linux /proc")
def test_the_worker_address_space_is_bounded():
    pid = _worker_pid()
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    (line,) = [row for row in limits if row.startswith("Max address space")]
    soft_limit = line.split()[3]
    assert soft_limit != "unlimited"
    # its size once Math-Verify is loaded (well under 2 GiB) plus the allowance
    assert MEMORY_LIMIT_BYTES < int(soft_limit) < MEMORY_LIMIT_BYTES + (2 << 30)


@needs_posix_signals
def test_fast_paths_never_touch_the_worker():
    pid = _worker_pid()
    before = _counts()
    os.kill(pid, signal.SIGSTOP)  # a call that reached the worker would time out
    try:
        assert verify_math("\\boxed{x^2 + 1}", "x^2 + 1", timeout_s=0.5)  # same string
        assert verify_math("\\boxed{12,345}", "12345", timeout_s=0.5)  # equal numbers
        assert verify_math("#### 2.50", "2.5", timeout_s=0.5)
        assert not verify_math("\\boxed{-3}", "3", timeout_s=0.5)  # distinct integers
    finally:
        os.kill(pid, signal.SIGCONT)
    assert _delta(before) == {"calls": 4}


def test_unparseable_answers_are_counted():
    before = _counts()
    assert not verify_math("the answer is 34", "34")
    assert not verify_math("\\boxed{}", "34")
    assert not verify_math("\\boxed{" + "1" * (MAX_ANSWER_CHARS + 1) + "}", "1" * (MAX_ANSWER_CHARS + 1))
    assert not verify_math("#### ", "34")  # `####` with nothing after it on the line
    assert verify_math("\\boxed{" + "1" * MAX_ANSWER_CHARS + "}", "1" * MAX_ANSWER_CHARS)  # at the cap: fine
    assert _delta(before) == {"calls": 5, "unparseable": 4}


@needs_posix_signals
def test_definite_verdicts_are_memoised():
    pid = _worker_pid()
    n = next(_fresh)
    right, wrong = f"\\boxed{{\\frac{{{n}}}{{{3 * n}}}}}", f"\\boxed{{\\frac{{{n}}}{{{3 * n + 1}}}}}"
    assert verify_math(right, "1/3") is True
    assert verify_math(wrong, "1/3") is False
    before = _counts()
    os.kill(pid, signal.SIGSTOP)  # a call that reached the worker would time out
    try:
        start = time.monotonic()
        assert verify_math("also " + right, "1/3", timeout_s=0.5) is True  # whatever the time limit
        assert verify_math("also " + wrong, "1/3", timeout_s=0.5) is False
        assert time.monotonic() - start < 0.1
    finally:
        os.kill(pid, signal.SIGCONT)
    assert _delta(before) == {"calls": 2}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_worker_and_leaves_the_parents_alone():
    parent_worker = _worker_pid()
    n = next(_fresh)  # not memoised in the parent, so the child needs a worker
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report the verdict and its worker, never return into pytest
        try:
            inherited = WORKER.pid  # the parent's worker is not the child's
            verdict = verify_math(f"\\boxed{{\\frac{{{n}}}{{{4 * n}}}}}", "0.25")
            os.write(write, f"{inherited} {verdict} {WORKER.pid}".encode())
            WORKER.stop()
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        inherited, verdict, child_worker = f.read().split()
    os.waitpid(child, 0)
    assert inherited == "None" and verdict == "True" and int(child_worker) != parent_worker
    assert WORKER.pid == parent_worker  # still the parent's, and still answering
    assert verify_math(f"\\boxed{{\\frac{{{n}}}{{{5 * n}}}}}", "0.2") and WORKER.pid == parent_worker


def test_works_outside_the_main_thread():
    with ThreadPoolExecutor(max_workers=2) as pool:
        verdicts = list(pool.map(verify_math, ["\\boxed{\\frac{7}{14}}", "\\boxed{\\frac{7}{15}}"], ["0.5", "0.5"]))
    assert verdicts == [True, False]


def test_falls_back_in_process_when_no_worker_can_start(monkeypatch):
    def no_processes(*args, **kwargs):
        raise OSError("no processes here")

    monkeypatch.setattr(subprocess, "Popen", no_processes)
    verifier = MathVerifier(worker=MathVerifyWorker())  # a worker of its own: the shared one keeps running
    with pytest.warns(RuntimeWarning, match="in-process"):
        assert verifier("\\boxed{\\frac{8}{16}}", "0.5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only
        assert not verifier("\\boxed{\\frac{8}{17}}", "0.5")
    assert verifier.worker.in_process and verifier.worker.pid is None


def test_in_process_timeouts_are_retried_and_not_memoised(monkeypatch):
    def slow(*args, **kwargs):
        time.sleep(30)  # interrupted by Math-Verify's own alarm

    worker = MathVerifyWorker()
    worker.in_process = True
    verifier = MathVerifier(worker=worker)
    n = next(_fresh)
    completion = f"\\boxed{{\\frac{{{n}}}{{{2 * n}}}}}"
    with monkeypatch.context() as patch:
        patch.setattr(math_verify.grader, "sympy_expr_eq", slow)
        start = time.monotonic()
        assert verifier(completion, "0.5", timeout_s=1.0) is False
        assert time.monotonic() - start < ATTEMPTS * (1.0 + MARGIN_S)
        assert verifier.counts == VerifyCounts(calls=1, timeouts=2, retries=1)
    assert verifier(completion, "0.5", timeout_s=1.0) is True  # checked again, not memoised

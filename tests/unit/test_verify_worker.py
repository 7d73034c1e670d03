"""The verifier's worker: a timed-out check is retried once and never memoised, each verifier counts and
memoises on its own, and the worker is a fresh interpreter that does not re-run the caller's main module."""

import os
import subprocess
import sys
import textwrap

import pytest

from lensrl.rollout.verifier import VerifyCounts
from lensrl.rollout.verify import MathVerifier

NEEDS_MATH_VERIFY = ("\\boxed{\\frac{1}{2}}", "0.5")  # not a fast path: it goes to the worker


class FakeWorker:
    """Stands in for the Math-Verify worker: gives its replies in turn (None: timed out), then repeats the last."""

    def __init__(self, *replies: bool | None) -> None:
        self.replies = list(replies)
        self.asked = 0

    def verdict(self, answer: str, gold: str, timeout_s: float, counts: VerifyCounts) -> bool | None:
        self.asked += 1
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def test_a_timed_out_check_is_retried_once():
    fake = FakeWorker(None, True)
    verifier = MathVerifier(worker=fake)
    assert verifier(*NEEDS_MATH_VERIFY) is True
    assert fake.asked == 2
    assert verifier.counts == VerifyCounts(calls=1, timeouts=1, retries=1)
    assert verifier(*NEEDS_MATH_VERIFY) is True  # the definite verdict is memoised
    assert fake.asked == 2


def test_a_timeout_is_never_memoised():
    fake = FakeWorker(None)
    verifier = MathVerifier(worker=fake)
    assert verifier(*NEEDS_MATH_VERIFY) is False
    assert fake.asked == 2  # one retry, no more
    assert verifier.counts == VerifyCounts(calls=1, timeouts=2, retries=1)
    fake.replies = [True]
    assert verifier(*NEEDS_MATH_VERIFY) is True
    assert fake.asked == 3


def test_a_wrong_verdict_is_memoised():
    fake = FakeWorker(False, True)
    verifier = MathVerifier(worker=fake)
    assert verifier(*NEEDS_MATH_VERIFY) is False
    assert verifier(*NEEDS_MATH_VERIFY) is False
    assert fake.asked == 1


def test_each_verifier_has_its_own_counts_and_memo():
    fake = FakeWorker(True)
    first, second = MathVerifier(worker=fake), MathVerifier(worker=fake)
    assert first(*NEEDS_MATH_VERIFY) and first("no final answer", "1") is False
    assert second(*NEEDS_MATH_VERIFY)
    assert fake.asked == 2  # the first one's memo does not answer for the second
    assert first.counts == VerifyCounts(calls=2, unparseable=1)
    assert second.counts == VerifyCounts(calls=1)


def test_the_time_limit_is_the_verifiers_unless_the_call_gives_one():
    limits = []

    class Recording(FakeWorker):
        def verdict(self, answer, gold, timeout_s, counts):
            limits.append(timeout_s)
            return True

    verifier = MathVerifier(timeout_s=7.0, worker=Recording(True))
    verifier("\\boxed{\\frac{1}{2}}", "0.5")
    verifier("\\boxed{\\frac{1}{3}}", "1/3", timeout_s=2.0)
    assert limits == [7.0, 2.0]


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text(
        textwrap.dedent("""\
        import lensrl.rollout.verify

        print("script body ran")
        verdict = lensrl.rollout.verify.verify_math("\\\\boxed{\\\\frac{1}{2}}", "0.5")
        print("verdict", verdict, "worker", lensrl.rollout.verify.WORKER.pid is not None)
        print("worker pid", lensrl.rollout.verify.WORKER.pid)
    """)
    )
    # a decoy `lensrl` in the working directory: the worker must import the caller's lensrl, not this one
    decoy = tmp_path / "cwd" / "lensrl"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy lensrl was imported')\n")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=decoy.parent
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("script body ran") == 1, result.stdout
    assert "verdict True worker True" in result.stdout, result.stdout + result.stderr
    assert "bootstrapping" not in result.stderr
    assert "RuntimeWarning" not in result.stderr
    assert "decoy" not in result.stderr
    (pid,) = [int(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("worker pid")]
    with pytest.raises(ProcessLookupError):  # killed and reaped at the script's exit
        os.kill(pid, 0)

"""The verifier's worker: a timed-out check is retried once and never memoised, and the worker is a fresh
interpreter that does not re-run the caller's main module."""

import os
import subprocess
import sys
import textwrap
from collections import OrderedDict

import pytest

from lensrl.rollout import verify as verify_module
from lensrl.rollout.verify import stats, verify_math

NEEDS_MATH_VERIFY = ("\\boxed{\\frac{1}{2}}", "0.5")  # not a fast path: it goes to the worker


class FakeWorker:
    """Stands in for `_ask_worker`: gives its replies in turn, then repeats the last one."""

    def __init__(self, *replies: bool | None) -> None:
        self.replies = list(replies)
        self.asked = 0

    def __call__(self, answer: str, gold: str, timeout_s: float) -> bool | None:
        self.asked += 1
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture
def worker_path(monkeypatch):
    """The worker path with no worker behind it and an empty memo; returns a setter for the fake."""
    monkeypatch.setattr(verify_module, "_ensure_worker", lambda: None)
    monkeypatch.setattr(verify_module, "_in_process", False)
    monkeypatch.setattr(verify_module, "_memo", OrderedDict())

    def install(fake: FakeWorker) -> FakeWorker:
        monkeypatch.setattr(verify_module, "_ask_worker", fake)
        return fake

    return install


def _delta(before: dict[str, int]) -> dict[str, int]:
    return {k: v - before[k] for k, v in stats().items() if v != before[k]}


def test_a_timed_out_check_is_retried_once(worker_path):
    fake = worker_path(FakeWorker(None, True))
    before = stats()
    assert verify_math(*NEEDS_MATH_VERIFY) is True
    assert fake.asked == 2
    assert _delta(before) == {"calls": 1, "timeouts": 1, "retries": 1}
    assert verify_math(*NEEDS_MATH_VERIFY) is True  # the definite verdict is memoised
    assert fake.asked == 2


def test_a_timeout_is_never_memoised(worker_path):
    fake = worker_path(FakeWorker(None))
    before = stats()
    assert verify_math(*NEEDS_MATH_VERIFY) is False
    assert fake.asked == 2  # one retry, no more
    assert _delta(before) == {"calls": 1, "timeouts": 2, "retries": 1}
    fake.replies = [True]
    assert verify_math(*NEEDS_MATH_VERIFY) is True
    assert fake.asked == 3


def test_a_wrong_verdict_is_memoised(worker_path):
    fake = worker_path(FakeWorker(False, True))
    assert verify_math(*NEEDS_MATH_VERIFY) is False
    assert verify_math(*NEEDS_MATH_VERIFY) is False
    assert fake.asked == 1


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent("""\
        import lensrl.rollout.verify

        print("script body ran")
        verdict = lensrl.rollout.verify.verify_math("\\\\boxed{\\\\frac{1}{2}}", "0.5")
        print("verdict", verdict, "worker", lensrl.rollout.verify._worker is not None)
        print("worker pid", lensrl.rollout.verify._worker[0].pid)
    """))
    # a decoy `lensrl` in the working directory: the worker must import the caller's lensrl, not this one
    decoy = tmp_path / "cwd" / "lensrl"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy lensrl was imported')\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            cwd=decoy.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("script body ran") == 1, result.stdout
    assert "verdict True worker True" in result.stdout, result.stdout + result.stderr
    assert "bootstrapping" not in result.stderr
    assert "RuntimeWarning" not in result.stderr
    assert "decoy" not in result.stderr
    (pid,) = [int(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("worker pid")]
    with pytest.raises(ProcessLookupError):  # killed and reaped at the script's exit
        os.kill(pid, 0)

"""Verifiers carry their own counts: a user's function is counted like the Math-Verify verifier."""

import pytest
import torch

from lensrl.records import Problem, Rollout
from lensrl.rollout.collect import score
from lensrl.rollout.verifier import FunctionVerifier, VerifyCounts
from lensrl.rollout.verify import MATH_VERIFIER, MathVerifier, as_verifier, verify_math
from lensrl.training.metrics import verifier_metrics


def flaky(completion: str, gold: str) -> bool:
    """Right when the completion is the gold answer; "slow" times out, "bug" is a bug."""
    if completion == "slow":
        raise TimeoutError("took too long")
    if completion == "bug":
        raise ZeroDivisionError("bug in the reward function")
    return completion == gold


def _rollout(completions: list[str], gold: str = "4") -> Rollout:
    """One group of len(completions) samples of a problem whose gold answer is `gold` (tokens unused)."""
    n = len(completions)
    return Rollout(
        problems=[Problem(prompt="2+2?", answer=gold, id="q")],
        group_size=n,
        input_ids=torch.zeros(n, 2, dtype=torch.long),
        prompt_mask=torch.ones(n, 1),
        response_mask=torch.ones(n, 1),
        completions=completions,
        truncated=torch.zeros(n, dtype=torch.bool),
    )


def test_a_function_verifier_counts_calls_timeouts_and_errors():
    verifier = FunctionVerifier(flaky, on_error="wrong")
    verdicts = [verifier(c, "4") for c in ("4", "5", "slow", "bug", "slow")]
    assert verdicts == [True, False, False, False, False]  # a timeout and an error score as wrong
    assert verifier.counts == VerifyCounts(calls=5, timeouts=2, errors=1)


def test_an_error_is_counted_then_raised_by_default():
    verifier = FunctionVerifier(flaky)
    assert verifier("slow", "4") is False  # a timeout is a verdict, not a failure
    with pytest.raises(ZeroDivisionError):
        verifier("bug", "4")
    assert verifier.counts == VerifyCounts(calls=2, timeouts=1, errors=1)


def test_on_error_must_be_raise_or_wrong():
    with pytest.raises(ValueError, match="on_error"):
        FunctionVerifier(flaky, on_error="ignore")


def test_counts_are_per_verifier_and_differences_of_snapshots():
    first, second = FunctionVerifier(flaky), FunctionVerifier(flaky)
    first("4", "4")
    before = first.counts.copy()
    first("slow", "4")
    second("4", "4")
    assert first.counts - before == VerifyCounts(calls=1, timeouts=1)
    assert first.counts == VerifyCounts(calls=2, timeouts=1)  # the snapshot is a copy: the counts went on
    assert second.counts == VerifyCounts(calls=1)


def test_as_verifier_keeps_verifiers_and_wraps_plain_functions():
    mine = MathVerifier()
    assert as_verifier(mine) is mine
    assert as_verifier(verify_math) is MATH_VERIFIER  # verify_math counts there: its counts stay whole
    wrapped = as_verifier(flaky)
    assert isinstance(wrapped, FunctionVerifier) and wrapped.function is flaky and wrapped.name == "flaky"


def test_score_counts_in_the_verifier_it_is_given():
    verifier = FunctionVerifier(flaky, on_error="wrong")
    assert score(_rollout(["4", "slow", "bug", "5"]), verifier).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert verifier.counts == VerifyCounts(calls=4, timeouts=1, errors=1)


def test_score_names_a_user_function_that_raises():
    with pytest.raises(
        RuntimeError,
        match=r"reward function flaky raised ZeroDivisionError: bug in the reward "
        r"function on problem 'q' \(gold '4'\), sample 1",
    ):
        score(_rollout(["4", "bug"]), flaky)


def test_verifier_metrics_name_every_count():
    # the keys of metrics.jsonl, in the order of VerifyCounts' fields, for every verifier alike
    assert verifier_metrics(VerifyCounts(calls=16, timeouts=4, errors=4)) == {
        "verify/calls": 16,
        "verify/unparseable": 0,
        "verify/timeouts": 4,
        "verify/retries": 0,
        "verify/errors": 4,
        "verify/worker_restarts": 0,
    }
    assert list(verifier_metrics(VerifyCounts())) == [
        f"verify/{k}" for k in ("calls", "unparseable", "timeouts", "retries", "errors", "worker_restarts")
    ]

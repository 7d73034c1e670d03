"""Verifiers: reward functions `(completion, gold answer) -> bool` that count what they did.

A `Verifier` is called like a plain function and keeps its own `counts` (`VerifyCounts`): calls, and
the ones that went wrong (no readable answer, timeouts, errors). The trainer logs how they change
over each step as `verify/*` in metrics.jsonl (`lensrl.training.metrics.verifier_metrics`), whichever
verifier it was given. `FunctionVerifier` wraps a user's plain function; `lensrl.rollout.verify`
holds the Math-Verify one (`MathVerifier`) and `as_verifier`, which turns whatever a caller passes
into a verifier.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias


@dataclass
class VerifyCounts:
    """Cumulative counts of one verifier (`a - b`: what happened between two snapshots)."""

    calls: int = 0
    unparseable: int = 0  # no final answer (or one too long to check)
    timeouts: int = 0  # every timed-out attempt
    retries: int = 0  # attempts repeated after a timeout
    errors: int = 0  # checks that failed (an exception, a crashed worker)
    worker_restarts: int = 0  # a checking process started again after a crash or kill

    def __sub__(self, other: VerifyCounts) -> VerifyCounts:
        return VerifyCounts(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)}
        )

    def __add__(self, other: VerifyCounts) -> VerifyCounts:
        return VerifyCounts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)}
        )

    def copy(self) -> VerifyCounts:
        return dataclasses.replace(self)


class Verifier(ABC):
    """A reward function `(completion, gold) -> bool` with its own `counts`; subclasses count in `__call__`."""

    def __init__(self) -> None:
        self.counts = VerifyCounts()

    @property
    def name(self) -> str:
        """What error messages call it."""
        return type(self).__qualname__

    @abstractmethod
    def __call__(self, completion: str, gold: str) -> bool:
        """True when `completion` answers with `gold`."""


class FunctionVerifier(Verifier):
    """A plain function `(completion, gold) -> bool` as a verifier that counts its calls, timeouts and errors.

    The function reports a timeout by raising `TimeoutError`: it is counted and the completion scores
    as wrong. Any other exception is counted in `errors` and then, with `on_error="raise"` (the
    default), raised again (the trainer stops with an error naming the problem, never a silently wrong
    reward), or with `on_error="wrong"` scored as wrong. The verdict itself is returned as the function
    gave it (`lensrl.rollout.collect.score` checks it is True/False or 0/1).
    """

    def __init__(self, function: Callable[[str, str], bool], on_error: Literal["raise", "wrong"] = "raise") -> None:
        super().__init__()
        if on_error not in ("raise", "wrong"):
            raise ValueError(f'on_error must be "raise" or "wrong", got {on_error!r}')
        self.function, self.on_error = function, on_error

    @property
    def name(self) -> str:
        return getattr(self.function, "__qualname__", repr(self.function))

    def __call__(self, completion: str, gold: str) -> bool:
        self.counts.calls += 1
        try:
            return self.function(completion, gold)
        except TimeoutError:
            self.counts.timeouts += 1
            return False
        except Exception:
            self.counts.errors += 1
            if self.on_error == "raise":
                raise
            return False


VerifierLike: TypeAlias = Verifier | Callable[[str, str], bool]
"""What callers accept as a reward function: a `Verifier`, or a plain function (wrapped by `as_verifier`)."""

"""`Problem`: the record every stage passes around (data sources, prompts, rollouts, evaluation)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One question with its verifiable answer."""

    prompt: str  # the question text (prompt formatting is applied later)
    answer: str  # gold answer, compared by the verifier
    level: int | None = None  # difficulty 1..5 where known
    solution: str | None = None  # worked solution (supervised warm-start target)
    id: str = ""
    subject: str | None = None  # e.g. "Algebra" (MATH) where known

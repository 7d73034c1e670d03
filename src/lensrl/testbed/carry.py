"""Seeded arithmetic problems in five difficulty levels: the built-in testbed's task.

Level L is a chain of L+1 integers joined by `+` and `-`, with the number range growing per level,
so that difficulty comes from multi-digit carries and borrows the warm-started policy learns only
partly, not from length alone (a longer chain of small numbers is learnt almost perfectly):

    level  terms  numbers
      1      2     1..9
      2      3     1..30
      3      4     1..99
      4      5     1..199
      5      6     1..499

The running total stays in [0, 999], so every intermediate result is a non-negative integer of at
most three digits. The worked solution writes one step per operation and boxes the result:

    prompt   "Q:17+79-66+4\nA:"
    solution "17+79=96 96-66=30 30+4=34 \\boxed{34}"     (the policy then emits EOS)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from lensrl.records import Problem

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
MAX_NUMBER: dict[int, int] = {1: 9, 2: 30, 3: 99, 4: 199, 5: 499}  # level -> largest term
MAX_TOTAL = 999  # running totals stay in [0, MAX_TOTAL]


def _check_level(level: int) -> None:
    if level not in MAX_NUMBER:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def _next_term(total: int, high: int, rng: random.Random) -> tuple[str, int]:
    """A random operator and term in 1..high that keep `total` inside [0, MAX_TOTAL]."""
    room = {"+": min(high, MAX_TOTAL - total), "-": min(high, total)}  # largest allowed term per op
    op = rng.choice("+-")
    if room[op] < 1:  # e.g. a total of 0 cannot be decreased
        op = "+" if op == "-" else "-"
    return op, rng.randint(1, room[op])


def make_problem(level: int, rng: random.Random) -> Problem:
    """One problem of `level` (1..5), drawn from `rng`; its id is the level and expression."""
    _check_level(level)
    high = MAX_NUMBER[level]
    total = rng.randint(1, high)
    expression = str(total)
    steps: list[str] = []
    for _ in range(level):  # level L has L operations
        op, term = _next_term(total, high, rng)
        new_total = total + term if op == "+" else total - term
        steps.append(f"{total}{op}{term}={new_total}")
        expression += f"{op}{term}"
        total = new_total
    answer = str(total)
    return Problem(
        prompt=f"Q:{expression}\nA:",
        answer=answer,
        level=level,
        solution=" ".join(steps) + f" \\boxed{{{answer}}}",
        id=f"L{level}:{expression}",
    )


def cycle_levels(
    make: Callable[[int, random.Random], Problem], n: int, levels: Sequence[int], seed: int
) -> list[Problem]:
    """`n` problems from `make` whose levels cycle through `levels` (problem i has level
    levels[i % len(levels)]). The list is fully determined by `seed`; the global `random` state is
    neither read nor changed. `make` checks the levels (each is made once before any problem)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if len(levels) == 0:
        raise ValueError("levels must name at least one level")
    for level in levels:
        make(level, random.Random(0))
    rng = random.Random(seed)
    return [make(levels[i % len(levels)], rng) for i in range(n)]


def generate_problems(n: int, levels: Sequence[int] = LEVELS, seed: int = 0) -> list[Problem]:
    """`n` problems whose levels cycle through `levels`, fully determined by `seed` (`cycle_levels`)."""
    return cycle_levels(make_problem, n, levels, seed)


def demonstration(problem: Problem, rng: random.Random) -> Problem:
    """The warm-start teacher's worked solution: always the right one on this testbed (`rng` is unused)."""
    return problem

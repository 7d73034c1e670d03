"""The "signs" testbed: sums and differences whose base policy often drops minus signs.

It models the regime RL with verifiable rewards works in on real language models: the policy has the
skill to carry out the right procedure reliably, but in the task's context it has the habit of a
plausible wrong one, so many of its mistakes are confident ones, and on the hardest levels whole
groups come out wrong, each in its own way.

Level L is a chain of L+1 terms in 1..9 joined by `+` and `-`, at least one of them `-` (level 1's
one operation is `-`); the running total stays in [0, 99]. The right procedure writes one step per
operation and boxes the result:

    prompt    "Q:8-3+6\\nA:"
    solution  "8-3=5 5+6=11 \\boxed{11}"

The warm-start teacher (`demonstration`) writes that solution on half of its problems, under a
practice prompt ("P:8-3+6\\nA:"), so the policy learns the procedure at every length. On the other
half (the task prompt "Q:") it drops each minus sign with a probability that grows with the level
(`DROP_MINUS`) and carries on just as carefully with the sign it wrote:

    dropped   "8+3=11 11+6=17 \\boxed{17}"

A problem is solved only if no sign is dropped, so problems with more minus signs are harder, and
the wrong answers of a group differ in how many and which signs they dropped, hence in confidence.
RL and evaluation use the task prompt only.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from lensrl.records import Problem
from lensrl.testbed.carry import cycle_levels

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
MAX_NUMBER = 9  # largest term
MAX_TOTAL = 99  # running totals of the right procedure stay in [0, MAX_TOTAL]
DROP_MINUS: dict[int, float] = {1: 0.2, 2: 0.4, 3: 0.55, 4: 0.76, 5: 0.88}
"""Level -> the teacher's chance of dropping each minus sign of a task problem."""
PRACTICE_SHARE = 0.5
"""Share of the teacher's problems given as practice (prompt "P:", always the right procedure)."""
PROMPT, PRACTICE_PROMPT = "Q:", "P:"


def _check_level(level: int) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def _terms(level: int, rng: random.Random) -> tuple[list[int], list[str]]:
    """Terms and operators of a level-`level` chain: at least one "-", running total in [0, MAX_TOTAL]."""
    ops = ["-"] if level == 1 else [rng.choice("+-") for _ in range(level)]
    if "-" not in ops:
        ops[rng.randrange(level)] = "-"
    total = rng.randint(1, MAX_NUMBER)
    terms = [total]
    for i, op in enumerate(ops):
        room = {"+": min(MAX_NUMBER, MAX_TOTAL - total), "-": min(MAX_NUMBER, total)}
        if room[op] < 1:  # a total of 0 cannot be decreased (it follows a "-", so one stays)
            op = ops[i] = "+" if op == "-" else "-"
        term = rng.randint(1, room[op])
        total = total + term if op == "+" else total - term
        terms.append(term)
    return terms, ops


def _chain(problem: Problem) -> tuple[list[int], list[str]]:
    """The terms and operators of a problem's prompt."""
    expression = problem.prompt[len(PROMPT) :].removesuffix("\nA:")
    ops = [c for c in expression if c in "+-"]
    return [int(t) for t in expression.replace("-", "+").split("+")], ops


def _worked(terms: list[int], ops: Sequence[str]) -> tuple[str, int]:
    """The step-by-step solution of `terms` joined by `ops`, and its result."""
    total, steps = terms[0], []
    for op, term in zip(ops, terms[1:]):
        new_total = total + term if op == "+" else total - term
        steps.append(f"{total}{op}{term}={new_total}")
        total = new_total
    return " ".join(steps) + f" \\boxed{{{total}}}", total


def make_problem(level: int, rng: random.Random) -> Problem:
    """One task problem of `level` (1..5) drawn from `rng`, with the right worked solution."""
    _check_level(level)
    terms, ops = _terms(level, rng)
    expression = str(terms[0]) + "".join(f"{op}{term}" for op, term in zip(ops, terms[1:]))
    solution, answer = _worked(terms, ops)
    return Problem(
        prompt=f"{PROMPT}{expression}\nA:",
        answer=str(answer),
        level=level,
        solution=solution,
        id=f"S{level}:{expression}",
    )


def generate_problems(n: int, levels: Sequence[int] = LEVELS, seed: int = 0) -> list[Problem]:
    """`n` task problems whose levels cycle through `levels`, fully determined by `seed` (`cycle_levels`)."""
    return cycle_levels(make_problem, n, levels, seed)


def dropped_solution(problem: Problem, dropped: Sequence[int]) -> str:
    """The worked solution with the minus signs at operator positions `dropped` written as plus."""
    terms, ops = _chain(problem)
    if any(ops[i] != "-" for i in dropped):
        raise ValueError(f"{problem.prompt!r}: operators {list(dropped)} are not all minus signs")
    return _worked(terms, ["+" if i in dropped else op for i, op in enumerate(ops)])[0]


def wrong_rule_answers(problem: Problem) -> set[str]:
    """Every answer that dropping one or more of the problem's minus signs gives."""
    terms, ops = _chain(problem)
    minus = [i for i, op in enumerate(ops) if op == "-"]
    return {
        str(_worked(terms, ["+" if i in subset else op for i, op in enumerate(ops)])[1])
        for r in range(1, len(minus) + 1)
        for subset in itertools.combinations(minus, r)
    }


def demonstration(problem: Problem, rng: random.Random) -> Problem:
    """The teacher's version of a task problem: a practice problem with the right solution (share
    PRACTICE_SHARE), else the task problem with each minus sign dropped with chance DROP_MINUS[level]."""
    if rng.random() < PRACTICE_SHARE:
        return Problem(
            PRACTICE_PROMPT + problem.prompt[len(PROMPT) :], problem.answer, problem.level, problem.solution, problem.id
        )
    _, ops = _chain(problem)
    dropped = [i for i, op in enumerate(ops) if op == "-" and rng.random() < DROP_MINUS[problem.level]]
    return Problem(problem.prompt, problem.answer, problem.level, dropped_solution(problem, dropped), problem.id)

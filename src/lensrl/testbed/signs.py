"""The "signs" testbed: sums and differences whose base policy often drops the minus signs.

It models the regime RL with verifiable rewards works in on real language models: the policy can
carry out the right procedure reliably, but it often prefers a plausible wrong one, so some of its
mistakes are confident, and on the hardest levels the wrong procedure is chosen so often that whole
groups come out wrong.

Level L is a chain of L+1 terms in 1..9 joined by `+` and `-`, at least one of them `-` (level 1's
one operation is `-`); the running total stays in [0, 99]. The levels differ in length and, above
all, in how often the base policy picks the wrong rule.

The right procedure writes one step per operation and boxes the result:

    prompt    "Q:8-3+6\\nA:"
    solution  "8-3=5 5+6=11 \\boxed{11}"

The warm-start teacher (`demonstration`) follows it on a share of the problems that falls with the
level (`WRONG_RULE`); on the others it reads every `-` as `+` and adds all the terms, step by step
and just as carefully:

    wrong     "8+3=11 11+6=17 \\boxed{17}"

Chains of small numbers are learnt almost perfectly by the testbed's model (every level uses the same
skills, so the right rule is well trained even where the teacher rarely uses it): the base policy's
mistakes come mostly from choosing the wrong rule, and those are confident mistakes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from lensrl.problem import Problem

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
MAX_NUMBER: dict[int, int] = {1: 9, 2: 9, 3: 9, 4: 9, 5: 9}  # level -> largest term
MAX_TOTAL = 99  # running totals of the right procedure stay in [0, MAX_TOTAL]
WRONG_RULE: dict[int, float] = {1: 0.2, 2: 0.45, 3: 0.7, 4: 0.93, 5: 0.98}
"""Level -> share of the teacher's demonstrations that use the wrong rule (minus read as plus)."""


def _check_level(level: int) -> None:
    if level not in MAX_NUMBER:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def _terms(level: int, rng: random.Random) -> tuple[list[int], list[str]]:
    """Terms and operators of a level-`level` chain: at least one "-", running total in [0, MAX_TOTAL]."""
    high = MAX_NUMBER[level]
    ops = ["-"] if level == 1 else [rng.choice("+-") for _ in range(level)]
    if "-" not in ops:
        ops[rng.randrange(level)] = "-"
    total = rng.randint(1, high)
    terms = [total]
    for i, op in enumerate(ops):
        room = {"+": min(high, MAX_TOTAL - total), "-": min(high, total)}
        if room[op] < 1:  # a total of 0 cannot be decreased (it follows a "-", so one stays), nor 99 increased
            op = ops[i] = "+" if op == "-" else "-"
        term = rng.randint(1, room[op])
        total = total + term if op == "+" else total - term
        terms.append(term)
    return terms, ops


def _worked(terms: list[int], ops: list[str]) -> tuple[str, int]:
    """The step-by-step solution of the chain `terms` joined by `ops`, and its result."""
    total, steps = terms[0], []
    for op, term in zip(ops, terms[1:]):
        new_total = total + term if op == "+" else total - term
        steps.append(f"{total}{op}{term}={new_total}")
        total = new_total
    return " ".join(steps) + f" \\boxed{{{total}}}", total


def make_problem(level: int, rng: random.Random) -> Problem:
    """One problem of `level` (1..5) drawn from `rng`, with the right worked solution."""
    _check_level(level)
    terms, ops = _terms(level, rng)
    expression = str(terms[0]) + "".join(f"{op}{term}" for op, term in zip(ops, terms[1:]))
    solution, answer = _worked(terms, ops)
    return Problem(prompt=f"Q:{expression}\nA:", answer=str(answer), level=level, solution=solution,
                   id=f"S{level}:{expression}")


def generate_problems(n: int, levels: Sequence[int] = LEVELS, seed: int = 0) -> list[Problem]:
    """`n` problems whose levels cycle through `levels`, fully determined by `seed`."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if len(levels) == 0:
        raise ValueError("levels must name at least one level")
    for level in levels:
        _check_level(level)
    rng = random.Random(seed)
    return [make_problem(levels[i % len(levels)], rng) for i in range(n)]


def _unsigned_terms(problem: Problem) -> list[int]:
    """The problem's terms with their signs dropped."""
    expression = problem.prompt.removeprefix("Q:").removesuffix("\nA:")
    return [int(t) for t in expression.replace("-", "+").split("+")]


def wrong_rule_solution(problem: Problem) -> str:
    """The worked solution with every "-" read as "+" (what the teacher writes when it errs)."""
    terms = _unsigned_terms(problem)
    return _worked(terms, ["+"] * (len(terms) - 1))[0]


def wrong_rule_answer(problem: Problem) -> str:
    """The answer the wrong rule gives: the sum of all the terms."""
    return str(sum(_unsigned_terms(problem)))


def demonstration(problem: Problem, rng: random.Random) -> Problem:
    """The problem with the teacher's worked solution: the wrong rule with probability WRONG_RULE[level]."""
    if rng.random() < WRONG_RULE[problem.level]:
        return Problem(problem.prompt, problem.answer, problem.level, wrong_rule_solution(problem), problem.id)
    return problem


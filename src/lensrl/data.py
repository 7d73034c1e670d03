"""Problems: the record every stage passes around, and where problems come from.

A `Problem` is a prompt plus a gold answer (and, for supervised warm-starts, a worked solution).
The built-in testbed generates them (`lensrl.testbed`); `load_jsonl` reads a user's own file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lensrl.config import DataConfig


@dataclass(frozen=True)
class Problem:
    """One question with its verifiable answer."""

    prompt: str  # exactly the text the policy is conditioned on
    answer: str  # gold answer, compared by the verifier
    level: int | None = None  # difficulty 1..5 where known
    solution: str | None = None  # worked solution (supervised warm-start target)
    id: str = ""


def load_jsonl(
    path: str | Path,
    prompt_field: str = "problem",
    answer_field: str = "answer",
    level_field: str | None = "level",
    solution_field: str | None = "solution",
    prompt_template: str = "{prompt}",
) -> list[Problem]:
    """Read problems from a JSON Lines file; a malformed row raises naming the file and line."""
    path = Path(path)
    problems: list[Problem] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            for field in (prompt_field, answer_field):
                if row.get(field) is None or str(row[field]).strip() == "":
                    raise ValueError(f"{path}:{lineno}: missing or empty field {field!r}")
            level = row.get(level_field) if level_field else None
            problems.append(
                Problem(
                    prompt=prompt_template.format(prompt=row[prompt_field]),
                    answer=str(row[answer_field]),
                    level=int(level) if level is not None else None,
                    solution=row.get(solution_field) if solution_field else None,
                    id=str(row.get("unique_id", row.get("id", f"{path.name}:{lineno}"))),
                )
            )
    if not problems:
        raise ValueError(f"{path}: no problems in file")
    return problems


EVAL_SEED = 12345  # the testbed's held-out problems are the same for every run seed


def load_problems(config: DataConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Train and eval problems as the data config says (testbed generator or JSON Lines files)."""
    from lensrl.testbed import generate_problems

    if config.train == "testbed":
        train = generate_problems(config.train_size, config.train_levels, seed=seed)
    else:
        train = _load_file(config, config.train)
    if config.eval == "testbed":
        n_eval = config.eval_per_level * len(config.eval_levels)
        evals = generate_problems(n_eval, config.eval_levels, seed=EVAL_SEED)
    else:
        evals = _cap_per_level(_load_file(config, config.eval), config.eval_levels, config.eval_per_level)
    return train, evals


def _load_file(config: DataConfig, path: str) -> list[Problem]:
    return load_jsonl(
        path,
        prompt_field=config.prompt_field,
        answer_field=config.answer_field,
        prompt_template=config.prompt_template,
    )


def _cap_per_level(problems: list[Problem], levels: list[int], per_level: int) -> list[Problem]:
    """Keep problems of the wanted levels (rows without a level are kept), at most `per_level` each."""
    kept: list[Problem] = []
    counts: dict[int | None, int] = {}
    for p in problems:
        if p.level is not None and p.level not in levels:
            continue
        if counts.get(p.level, 0) < per_level:
            counts[p.level] = counts.get(p.level, 0) + 1
            kept.append(p)
    if not kept:
        raise ValueError(f"no evaluation problems left at levels {levels}")
    return kept

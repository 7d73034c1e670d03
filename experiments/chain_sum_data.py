"""The chain-sum task for SmolLM2-135M-Instruct: problems from reasoning-gym, written as lensrl data files.

    pip install reasoning-gym==0.1.25
    python experiments/chain_sum_data.py            # writes data/chain_sum/{sft,rl,heldout}.jsonl

reasoning-gym's `chain_sum` asks for the value of a chain of additions and subtractions of 2-digit
numbers ("State the final answer to the following arithmetic problem: 21 - 81 + 7 ="). Level L has
L + 1 terms (levels 1-4). Each file is JSON Lines in lensrl's `custom` layout (problem, answer,
level, solution); the solution works the chain left to right, one line per operation, and ends with
"The final answer is \\boxed{N}." (the warm-start teaches that format, the verifier reads the box).

The three files come from disjoint seeds and the held-out set shares no expression with the other
two, so neither the warm-start nor RL ever trains on a held-out problem. The files are committed, so
nothing but this script needs reasoning-gym.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

LEVEL_TERMS = {1: 2, 2: 3, 3: 4, 4: 5}
DIGITS = 2
# file -> (problems per level, first reasoning-gym seed); level L uses seed + L
SPLITS = {"heldout": (50, 1000), "sft": (300, 2000), "rl": (250, 3000)}


def worked_solution(expression: str) -> str:
    """'21 - 81 + 7' -> '21 - 81 = -60\\n-60 + 7 = -53\\nThe final answer is \\\\boxed{-53}.'"""
    tokens = expression.split()
    value, lines = int(tokens[0]), []
    for op, term in zip(tokens[1::2], tokens[2::2]):
        if op not in "+-":
            raise ValueError(f"unexpected operator {op!r} in {expression!r}")
        new = value + int(term) if op == "+" else value - int(term)
        lines.append(f"{value} {op} {term} = {new}")
        value = new
    return "\n".join(lines) + f"\nThe final answer is \\boxed{{{value}}}."


def split_rows(name: str) -> list[dict]:
    import reasoning_gym

    per_level, seed = SPLITS[name]
    rows = []
    for level, terms in LEVEL_TERMS.items():
        dataset = reasoning_gym.create_dataset("chain_sum", size=per_level, seed=seed + level, min_terms=terms,
                                               max_terms=terms, min_digits=DIGITS, max_digits=DIGITS)
        for i, entry in enumerate(dataset):
            solution = worked_solution(entry["metadata"]["expression"])
            if not solution.endswith(f"\\boxed{{{entry['answer']}}}."):
                raise ValueError(f"worked solution disagrees with reasoning-gym's answer: {entry}")
            rows.append({"id": f"chain_sum-{name}-L{level}-{i}", "problem": entry["question"],
                         "answer": entry["answer"], "level": level, "solution": solution})
    return rows


def make(out: Path) -> dict[str, int]:
    """Write the three files; returns rows per file (training files lose any held-out expression)."""
    splits = {name: split_rows(name) for name in SPLITS}
    held = {row["problem"] for row in splits["heldout"]}
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, rows in splits.items():
        if name != "heldout":
            rows = [row for row in rows if row["problem"] not in held]
        (out / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        counts[name] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/chain_sum")
    args = parser.parse_args(argv)
    print(make(Path(args.out)))


if __name__ == "__main__":
    main()

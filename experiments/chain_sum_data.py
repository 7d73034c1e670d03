"""The chain-sum task for SmolLM2-135M-Instruct: problems from reasoning-gym, written as lensrl data files.

    pip install reasoning-gym==0.1.25
    python -m experiments.chain_sum_data            # writes data/chain_sum/{sft,rl,heldout}.jsonl

reasoning-gym's `chain_sum` asks for the value of a chain of additions and subtractions of 1-digit
numbers ("State the final answer to the following arithmetic problem: 2 - 8 + 7 ="). Level L has
L + 2 terms (levels 1-4). Each file is JSON Lines in lensrl's `custom` layout (problem, answer,
level, solution). A worked solution goes left to right, one line per operation, and ends with
"The final answer is \\boxed{N}."; a direct one is that last line alone. The warm-start file mixes
the two styles half and half, as instruction data mixes answers with and without working, so the
warm-started model uses both and RL has a choice to learn: working a long chain out should be
right more often (`experiments/chain_sum_styles.py` measures it).
The RL and held-out files carry worked solutions (RL reads only the answers).

The three files come from disjoint seeds and the held-out set shares no expression with the other
two, so neither the warm-start nor RL ever trains on a held-out problem. The files are committed, so
nothing but this script needs reasoning-gym.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

LEVEL_TERMS = {1: 3, 2: 4, 3: 5, 4: 6}
DIGITS = 1
DIRECT_SHARE = {"sft": 0.5}  # share of a file's rows whose solution is the final line alone
# file -> (problems per level, first reasoning-gym seed); level L uses seed + L
SPLITS = {"heldout": (50, 1000), "sft": (300, 2000), "rl": (250, 3000)}


def worked_solution(expression: str) -> str:
    """'2 - 8 + 7' -> '2 - 8 = -6\\n-6 + 7 = 1\\nThe final answer is \\\\boxed{1}.'"""
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
    direct = random.Random(seed)
    rows = []
    for level, terms in LEVEL_TERMS.items():
        dataset = reasoning_gym.create_dataset(
            "chain_sum",
            size=per_level,
            seed=seed + level,
            min_terms=terms,
            max_terms=terms,
            min_digits=DIGITS,
            max_digits=DIGITS,
        )
        for i, entry in enumerate(dataset):
            solution = worked_solution(entry["metadata"]["expression"])
            if not solution.endswith(f"\\boxed{{{entry['answer']}}}."):
                raise ValueError(f"worked solution disagrees with reasoning-gym's answer: {entry}")
            if direct.random() < DIRECT_SHARE.get(name, 0.0):
                solution = solution.splitlines()[-1]
            rows.append(
                {
                    "id": f"chain_sum-{name}-L{level}-{i}",
                    "problem": entry["question"],
                    "answer": entry["answer"],
                    "level": level,
                    "solution": solution,
                }
            )
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

"""The run folder's JSON-lines logs and atomic writes (no heavy imports: plots and samples read runs too)."""

from __future__ import annotations

import json
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write a temporary file and rename it: readers see the old or the new file, never a part."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def append_jsonl(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """Every record of a JSON-lines log, in file order; [] when there is none.

    A last line cut short (a run killed, or still writing it) is left out; any other line that is
    not JSON is an error naming the file and line.
    """
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines) and not text.endswith("\n"):
                break
            raise ValueError(f"{path}:{number} is not a JSON line: {e}") from None
    return records

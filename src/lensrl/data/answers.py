"""The final answer of a completion: what a verifier compares with the gold answer, and what a
source's worked solution gives as its answer.

The final answer is the content of the last balanced `\\boxed{...}`, else the text after the last
GSM8K-style `####`. Model output is untrusted: the scan is bounded (`MAX_BOX_TRIES`).
"""

from __future__ import annotations

import re

MAX_BOX_TRIES = 16  # unbalanced `\\boxed{` openings skipped before giving up
_GSM8K = re.compile(r"####\s*([^\n]+)")


def extract_answer(completion: str) -> str | None:
    """Content of the last balanced `\\boxed{...}`, else the text after the last `####`, else None."""
    start, end = completion.rfind("\\boxed{"), len(completion)
    for _ in range(MAX_BOX_TRIES):  # bounded: hostile text can hold thousands of unbalanced boxes
        if start == -1:
            break
        depth = 0
        for i in range(start + len("\\boxed"), end):
            c = completion[i]
            depth += (c == "{") - (c == "}")
            if depth == 0:
                return completion[start + len("\\boxed{") : i].strip()
        # unbalanced: try an earlier box. It cannot close after this one opens (this one never gets
        # back to depth 0), so it is scanned only up to here and all tries together read the text once.
        start, end = completion.rfind("\\boxed{", 0, start), start
    matches = _GSM8K.findall(completion)
    if matches:
        return matches[-1].strip().replace(",", "")
    return None

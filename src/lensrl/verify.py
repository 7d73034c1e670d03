"""Answer checking: the final answer of a completion against a gold answer, with Math-Verify.

The final answer is the content of the last balanced `\\boxed{...}` (or a GSM8K-style `#### N`).
Model output is untrusted: it is never executed, it is cut to a bounded length, and Math-Verify's
own parse and compare time limits apply, so a hostile string costs at most a few seconds.
Verdicts are memoised on (answer, gold) because sampled groups repeat answers a lot.
"""

from __future__ import annotations

import re
from functools import lru_cache

from math_verify import parse, verify

MAX_ANSWER_CHARS = 256  # a longer "final answer" is treated as unparseable
MAX_BOX_TRIES = 16  # unbalanced `\\boxed{` openings skipped before giving up
_GSM8K = re.compile(r"####\s*([^\n]+)")


def extract_answer(completion: str) -> str | None:
    """Content of the last balanced `\\boxed{...}`, else the text after the last `####`, else None."""
    start = completion.rfind("\\boxed{")
    for _ in range(MAX_BOX_TRIES):  # bounded: hostile text can hold thousands of unbalanced boxes
        if start == -1:
            break
        depth = 0
        for i in range(start + len("\\boxed"), len(completion)):
            c = completion[i]
            depth += (c == "{") - (c == "}")
            if depth == 0:
                return completion[start + len("\\boxed{") : i].strip()
        # unbalanced: try an earlier box
        start = completion.rfind("\\boxed{", 0, start)
    matches = _GSM8K.findall(completion)
    if matches:
        return matches[-1].strip().replace(",", "")
    return None


@lru_cache(maxsize=65536)
def _answers_match(answer: str, gold: str, timeout_s: int) -> bool:
    gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout_s)
    pred_parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout_s)
    if not gold_parsed or not pred_parsed:
        return answer.strip() == gold.strip()
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))


def verify_math(completion: str, gold: str, timeout_s: int = 2) -> bool:
    """True when the completion's final answer equals `gold` (Math-Verify equivalence)."""
    answer = extract_answer(completion)
    if answer is None or not answer or len(answer) > MAX_ANSWER_CHARS:
        return False
    try:
        return _answers_match(answer, str(gold).strip(), timeout_s)
    except Exception:  # a verifier failure is a wrong answer, never a crashed run
        return False

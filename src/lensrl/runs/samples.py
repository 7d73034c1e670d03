"""The sample log: whole groups of a rollout with what each response got.

Metrics say how many answers were wrong; the sample log shows which ones, and what the update made
of them. Every `run.sample_every` steps (0: never) the trainer appends one entry to the run folder's
samples.jsonl with `run.sample_groups` whole groups of that step's rollout, and experiment trackers
(`run.report_to`) get the same entry as a table (`sample_table`, one row per response).

Which groups: chosen by group index, without any random number generator (a run's numbers do not
depend on whether it logs samples): negative (all wrong) and mixed groups alternately, the first of
each by index, then whichever kind is left, all-correct groups last.

File format, one JSON object per line:

    {"step": 10, "algorithm": "lens", "groups": [
      {"index": 3, "problem_id": "...", "prompt": "<the formatted prompt>", "answer": "<gold>",
       "level": 2, "kind": "negative" | "mixed" | "all_correct",
       "samples": [{"completion": "...", "correct": false, "pibar": 0.81, "calibrated_reward": -0.25,
                    "advantage": -0.06, "truncated": false, "length": 57}, ...]}, ...]}

pibar = exp(seq_logprob / length) is the behaviour policy's length-normalised confidence in the
response; calibrated_reward is LENS's r~ for it (docs/algorithm.md Sec. 3, with `algo.d_estimator`
of a LENS run, the default otherwise) whatever the run's estimator, so a GRPO run shows what LENS
would make of its mistakes; advantage is what the update actually used. Values that are not finite are null.

Reading it:

    lensrl samples RUN [--step S] [--negative] [--limit N]

prints one entry (default: the latest step's): negative groups first, then mixed, then all-correct,
and in each group the most confident mistakes first. `--negative` keeps only negative groups,
`--limit` caps the number of groups.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import torch

from lensrl.config import AlgoConfig, load_config, switch_estimator
from lensrl.core.advantages import GROUP_KINDS, group_kinds, lens_rewards
from lensrl.records import ScoredRollout
from lensrl.runs.jsonl import read_jsonl

FILE = "samples.jsonl"
COLUMNS = [
    "step",
    "group",
    "kind",
    "level",
    "prompt",
    "answer",
    "completion",
    "correct",
    "pibar",
    "calibrated_reward",
    "advantage",
    "truncated",
]
WIDTH = 100  # columns of a rendered line


# ------------------------------------------------------------------------------------ writing


def _floats(x: torch.Tensor | None, n: int) -> list[float | None]:
    """A tensor as Python floats, None where not finite (or everywhere when there is none)."""
    if x is None:
        return [None] * n
    return [v if math.isfinite(v) else None for v in x.detach().double().cpu().tolist()]


def choose_groups(kinds: list[str], groups: int) -> list[int]:
    """Indices of at most `groups` groups, ascending: negative and mixed ones alternately (each by
    index), then the rest of either, all-correct ones last. Deterministic, no random numbers."""
    negative = [q for q, k in enumerate(kinds) if k == "negative"]
    mixed = [q for q, k in enumerate(kinds) if k == "mixed"]
    order = [q for pair in zip(negative, mixed) for q in pair]
    short = min(len(negative), len(mixed))
    order += negative[short:] + mixed[short:] + [q for q, k in enumerate(kinds) if k == "all_correct"]
    return sorted(order[: max(groups, 0)])


def sample_record(rollout: ScoredRollout, advantages: torch.Tensor, algo: AlgoConfig, step: int, groups: int) -> dict:
    """One samples.jsonl entry: `groups` whole groups of the rollout (module docstring for the format)."""
    g, n, offsets = rollout.group_size, len(rollout.completions), rollout.group_offsets
    correct = rollout.correct.detach().cpu()
    right = (correct > 0).tolist()
    lengths = rollout.lengths.detach().cpu()
    kinds = [GROUP_KINDS[k] for k in group_kinds(correct, g).tolist()]
    d_estimator = switch_estimator(algo, "lens").d_estimator  # the run's under LENS, else the default
    seq = rollout.seq_logprobs.detach().double().cpu()
    pibar = rollout.pibar.detach().cpu()
    try:
        calibrated = lens_rewards(correct, seq, lengths, g, d_estimator)
    except ValueError:  # log-probs not finite (a skipped update): nothing to calibrate
        calibrated = None
    pibar_f, calibrated_f = _floats(pibar, n), _floats(calibrated, n)
    advantage_f = _floats(advantages, n)
    truncated = rollout.truncated.detach().cpu().tolist()
    length = lengths.tolist()

    chosen = []
    for q in choose_groups(kinds, groups):
        problem = rollout.problems[q]
        rows = range(offsets[q], offsets[q + 1])
        chosen.append(
            {
                "index": q,
                "problem_id": problem.id,
                "prompt": problem.prompt,
                "answer": problem.answer,
                "level": problem.level,
                "kind": kinds[q],
                "samples": [
                    {
                        "completion": rollout.completions[i],
                        "correct": right[i],
                        "pibar": pibar_f[i],
                        "calibrated_reward": calibrated_f[i],
                        "advantage": advantage_f[i],
                        "truncated": bool(truncated[i]),
                        "length": int(length[i]),
                    }
                    for i in rows
                ],
            }
        )
    return {"step": step, "algorithm": algo.advantage, "groups": chosen}


def sample_table(record: dict) -> tuple[list[str], list[list]]:
    """A samples.jsonl entry flattened for experiment trackers: `COLUMNS`, one row per response."""
    rows = [
        [
            record["step"],
            group["index"],
            group["kind"],
            group["level"],
            group["prompt"],
            group["answer"],
            s["completion"],
            s["correct"],
            s["pibar"],
            s["calibrated_reward"],
            s["advantage"],
            s["truncated"],
        ]
        for group in record["groups"]
        for s in group["samples"]
    ]
    return list(COLUMNS), rows


# ------------------------------------------------------------------------------------ reading


def read_samples(run_dir: str | Path) -> list[dict]:
    """Every entry of a run's samples.jsonl, in file order (a last line cut short is left out)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        raise ValueError(_why_no_log(Path(run_dir)))
    return read_jsonl(path)


def _why_no_log(run_dir: Path) -> str:
    """Why a folder has no sample log, from its config.yaml and metrics.jsonl."""
    if not run_dir.is_dir():
        return f"no such folder {run_dir}"
    try:
        every = load_config(run_dir / "config.yaml").run.sample_every
    except ValueError:  # no config.yaml (not a run folder), or one today's schema cannot read
        return f"{run_dir} has no {FILE} and no readable config.yaml: is it a run folder?"
    if not every:
        return f"{run_dir} has no {FILE}: run.sample_every=0: this run logs no samples"
    steps = len(read_jsonl(run_dir / "metrics.jsonl"))
    return (
        f"{run_dir} has no {FILE}: the run logs samples every run.sample_every={every} steps and has logged "
        f"{steps} step{'' if steps == 1 else 's'} so far"
    )


def _one_line(text: str) -> str:
    return text.replace("\r\n", "⏎").replace("\n", "⏎").replace("\r", "⏎").replace("\t", " ")


def _shorten(text: str, width: int, keep_end: bool = False) -> str:
    """`text` on one line in at most `width` characters; "…" marks what was cut (the end, or the start)."""
    text = _one_line(text)
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return "…" + text[len(text) - width + 1 :] if keep_end else text[: width - 1] + "…"


_SPECIAL_TOKEN = re.compile(r"<\|[^|<>\s]*\|>")  # <|im_start|>, <|eot_id|>, ...


def _prompt_line(prompt: str, width: int) -> str:
    """A formatted prompt on one line: chat-template tokens and runs of whitespace as one space, and its
    end kept when cut (where the question is, after the template's system text)."""
    return _shorten(re.sub(r"\s+", " ", _SPECIAL_TOKEN.sub(" ", prompt)).strip(), width, keep_end=True)


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "     -" if signed else "    -"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _confidence(sample: dict) -> float:
    return sample["pibar"] if sample["pibar"] is not None else -math.inf


def format_samples(record: dict, negative_only: bool = False, limit: int | None = None) -> str:
    """One samples.jsonl entry for the terminal.

    Groups: negative, then mixed, then all-correct (`negative_only`: negative ones only; `limit`: at
    most that many), each headed by its kind, level, gold answer and prompt (on one line, chat-template
    tokens left out, its end kept when cut). In each group the wrong answers by descending pibar (most
    confident mistake first), then the right ones; one line per response: mark, pibar, calibrated
    reward r~, advantage, "cut" when truncated, and the completion (newlines as ⏎), in about 100 columns.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    groups = sorted(record["groups"], key=lambda grp: (GROUP_KINDS.index(grp["kind"]), grp["index"]))
    counts = {k: sum(grp["kind"] == k for grp in groups) for k in GROUP_KINDS}
    if negative_only:
        groups = [grp for grp in groups if grp["kind"] == "negative"]
    shown = groups if limit is None else groups[:limit]
    lines = [
        f"step {record['step']} · {record['algorithm']} · {len(record['groups'])} groups logged "
        f"({counts['negative']} negative, {counts['mixed']} mixed, {counts['all_correct']} all correct)"
        + (f", {len(shown)} shown" if len(shown) != len(record["groups"]) else "")
    ]
    if not shown:
        lines.append("(no negative groups in this entry)" if negative_only and not groups else "(no groups shown)")
    for grp in shown:
        level = grp["level"] if grp["level"] is not None else "?"
        gold = _shorten(str(grp["answer"]), 24)
        head = f"{grp['kind'].replace('_', '-')} · group {grp['index']} · level {level} · gold {gold} · "
        lines += ["", head + _prompt_line(grp["prompt"], max(WIDTH - len(head), 20))]
        lines.append("     pibar      r~     adv")
        wrong = sorted((s for s in grp["samples"] if not s["correct"]), key=_confidence, reverse=True)
        right = sorted((s for s in grp["samples"] if s["correct"]), key=_confidence, reverse=True)
        for s in wrong + right:
            mark, cut = "✓" if s["correct"] else "✗", "cut" if s["truncated"] else "   "
            prefix = (
                f"  {mark}  {_number(s['pibar'])}  {_number(s['calibrated_reward'], True)}  "
                f"{_number(s['advantage'], True)}  {cut}  "
            )
            lines.append(prefix + _shorten(s["completion"], max(WIDTH - len(prefix), 20)))
    return "\n".join(lines)


def print_samples(
    run_dir: str | Path, step: int | None = None, negative_only: bool = False, limit: int | None = None
) -> None:
    """Print one entry of a run's sample log (`format_samples`): that step's, by default the latest."""
    entries = read_samples(run_dir)
    if not entries:
        raise ValueError(f"{Path(run_dir) / FILE} has no entries yet")
    if step is None:
        record = max(reversed(entries), key=lambda e: e["step"])  # the last written of the latest step
    else:
        matching = [e for e in entries if e["step"] == step]
        if not matching:
            steps = sorted({e["step"] for e in entries})
            raise ValueError(
                f"{run_dir} has no sample-log entry for step {step}; steps with one: " + ", ".join(map(str, steps))
            )
        record = matching[-1]
    text = format_samples(record, negative_only=negative_only, limit=limit)
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    print(text.encode(encoding, errors="replace").decode(encoding))

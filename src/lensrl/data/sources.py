"""Problems: the record every stage passes around, and where problems come from.

A `Problem` is a question plus a gold answer (and, for supervised warm-starts, a worked solution).
Problems come from sources (`SourceConfig`): the built-in testbed generator (`lensrl.testbed`), a
local .json / .jsonl / .parquet file, or a Hugging Face dataset id. A source's `kind` names the
layout of its rows; the field names of each preset can be overridden (dotted paths reach into
nested objects):

    kind    question                        gold answer                          level  subject         solution
    math    problem                         answer, else the solution's last     level  subject / type  solution
                                            \\boxed{}                            ("Level 3" -> 3)
    gsm8k   question                        the number after "####" in answer    -      -               answer (HF)
                                                                                                        / solution
    dapo    prompt (user message of a chat  reward_model.ground_truth, answer    -      -               -
            list; DAPO's instruction        or solution
            wrapper removed)
    custom  problem                         answer                               level  subject         solution
    auto    math if the first row has "problem" and "level" or "solution"; gsm8k if it has "question";
            dapo if it has "reward_model" or a list-valued "prompt"; custom otherwise

`Problem.prompt` is the raw question text: prompt formatting (templates, chat) happens later.
GSM8K worked solutions are normalised for supervised warm-starts: calculator notes `<<48/2=24>>` are
removed and the final `#### N` line becomes "The final answer is \\boxed{N}." (the verifier reads the
last box).

Per source, in this order: the `rows` slice, row parsing, the `levels` and `subjects` filters, the
`per_level` cap (first rows in source order; rows without a level count as one group), then for files
a seeded sample of `size` rows. Errors in a row name the file and line (`path:line` for JSON Lines,
`path:index` with the 0-based row index for .json, .parquet and dataset ids).
"""

from __future__ import annotations

import json
import math
import numbers
import random
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lensrl.config import DataConfig, SourceConfig
from lensrl.data.answers import extract_answer
from lensrl.records import Problem
from lensrl.seeds import EVAL_SEED, source_seed
from lensrl.testbed import task, testbed_name, warmstart_problems

FILE_SUFFIXES = (".json", ".jsonl", ".parquet")

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


# ----------------------------------------------------------------------------------------- public


def load_problems(config: DataConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Train and eval problems: the concatenation of the configured train and eval sources
    (`load_train_problems`, `load_eval_problems`)."""
    train = load_train_problems(config, seed)
    return train, load_eval_problems(config, seed, train)


def load_train_problems(config: DataConfig, seed: int) -> list[Problem]:
    """The training problems: train source i is loaded with `seeds.source_seed(seed, i)` (a single
    source uses the run seed itself)."""
    return [
        p
        for i, source in enumerate(config.train)
        for p in load_source(source, source_seed(seed, i), config.skip_bad_rows)
    ]


def load_eval_problems(config: DataConfig, seed: int, train: list[Problem] | None = None) -> list[Problem]:
    """The evaluation problems: eval sources use `seeds.EVAL_SEED` in place of the run seed, so the
    evaluation set is the same for every run seed.

    The training sources are read only when an `unseen` source must leave their problems out (`train`:
    those problems when the caller has them already), so evaluating alone (`lensrl eval`) touches no
    training file or dataset otherwise.
    """
    if train is None:
        train = load_train_problems(config, seed) if any(source.unseen for source in config.eval) else []
    return [
        p
        for i, source in enumerate(config.eval)
        for p in (
            unseen_problems(source, source_seed(EVAL_SEED, i), train)
            if source.unseen
            else load_source(source, source_seed(EVAL_SEED, i), config.skip_bad_rows)
        )
    ]


UNSEEN_DRAWS = 200
"""`unseen_problems` gives up on a level after this many draws per problem asked for."""


def unseen_problems(source: SourceConfig, seed: int, train: list[Problem]) -> list[Problem]:
    """`source.per_level` distinct problems of each level of a testbed source that are neither in the
    testbed's warm-start stream (`testbed.warmstart_problems`) nor among `train` (by problem id), drawn
    level by level from `random.Random(seed)`. A level that yields too few within UNSEEN_DRAWS draws per
    problem is an error naming it."""
    name = testbed_name(source.path)
    if name is None or source.per_level is None:
        raise ValueError(f"data source {_describe(source)}: unseen needs a testbed source with per_level")
    generator, rng = task(name), random.Random(seed)
    seen = {p.id for p in warmstart_problems(name)} | {p.id for p in train}
    problems: list[Problem] = []
    for level in source.levels or generator.LEVELS:
        found: dict[str, Problem] = {}
        for _ in range(UNSEEN_DRAWS * source.per_level):
            if len(found) == source.per_level:
                break
            problem = generator.make_problem(level, rng)
            if problem.id not in seen:
                found.setdefault(problem.id, problem)
        if len(found) < source.per_level:
            raise ValueError(
                f"data source {_describe(source)}: level {level} has only {len(found)} of {source.per_level} "
                f"problems outside the warm-start stream and the training problems in "
                f"{UNSEEN_DRAWS * source.per_level} draws; leave it out with `levels`"
            )
        problems += found.values()
    return problems


def load_source(source: SourceConfig, seed: int = 0, skip_bad_rows: bool = False) -> list[Problem]:
    """The problems of one source, sliced, filtered, capped per level and sampled as it says.

    `seed` seeds the testbed generator and the `size` sample (`random.Random(seed)`). A malformed row
    raises ValueError naming its file and line, unless `skip_bad_rows`, which skips such rows and
    warns once with their count and the first one.
    """
    testbed = testbed_name(source.path)
    if testbed is not None:
        problems = _row_slice(_testbed(testbed, source, seed), source)
    else:
        problems = _load_rows(source, skip_bad_rows)
    problems = _filter(problems, source)
    if not problems:
        raise ValueError(f"data source {_describe(source)} has no problems left")
    if source.size is not None and testbed is None:
        problems = _sample(problems, source.size, random.Random(seed))
    return problems


def load_jsonl(
    path: str | Path,
    prompt_field: str | None = None,
    answer_field: str | None = None,
    level_field: str | None = None,
    solution_field: str | None = None,
    subject_field: str | None = None,
    kind: str = "auto",
    skip_bad_rows: bool = False,
) -> list[Problem]:
    """All problems of a local JSON Lines (or .json / .parquet) file; None fields: the preset's.

    A malformed row raises ValueError naming the file and line.
    """
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    source = SourceConfig(
        path=str(path),
        kind=kind,
        prompt_field=prompt_field,
        answer_field=answer_field,
        level_field=level_field,
        solution_field=solution_field,
        subject_field=subject_field,
    )
    return load_source(source, skip_bad_rows=skip_bad_rows)


# ------------------------------------------------------------------------------------ the testbed


def _testbed(name: str, source: SourceConfig, seed: int) -> list[Problem]:
    generator = task(name)
    levels = source.levels or list(generator.LEVELS)
    if source.size is not None:
        n = source.size
    elif source.per_level is not None:
        n = source.per_level * len(levels)  # levels cycle, so exactly per_level of each
    else:
        raise ValueError(f'a "{source.path}" data source needs size (problems generated) or per_level')
    return generator.generate_problems(n, levels, seed=seed)


# ------------------------------------------------------------------------------------------- rows


class _BadRow:
    """A row that could not even be decoded; it raises when (and only if) it is parsed."""

    def __init__(self, message: str) -> None:
        self.message = message


@dataclass
class _Rows:
    name: str  # short name for problem ids
    count: int
    first: Callable[[], Any]  # first decodable row (None if none), to guess the layout
    read: Callable[[range], Iterator[tuple[str, str, Any]]]  # (error location, default id, row)


def _open_rows(source: SourceConfig) -> _Rows:
    path = Path(source.path).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _jsonl_rows(path)
        if suffix == ".json":
            return _json_rows(path)
        if suffix == ".parquet":
            return _parquet_rows(path)
        raise ValueError(f"{source.path}: unsupported file type {suffix!r} (expected .json, .jsonl or .parquet)")
    if path.is_dir():
        return _hub_rows(source)  # a dataset folder: `datasets` reads its data files
    if _looks_local(source.path):
        raise ValueError(
            f"{source.path}: no such file (a data source is 'testbed', a local .json/.jsonl/.parquet file "
            "or a Hugging Face dataset id)"
        )
    return _hub_rows(source)


def _looks_local(path: str) -> bool:
    """A path no Hugging Face dataset id looks like (ids are "name" or "owner/name")."""
    return (
        path.lower().endswith(FILE_SUFFIXES)
        or path.startswith(("/", ".", "~", "\\"))
        or path.count("/") > 1
        or "\\" in path
    )


def _jsonl_rows(path: Path) -> _Rows:
    with path.open(encoding="utf-8") as f:
        lines = [(lineno, line) for lineno, line in enumerate(f, start=1) if line.strip()]

    def decode(line: str) -> Any:
        try:
            return json.loads(line)
        except json.JSONDecodeError as e:
            return _BadRow(f"not valid JSON ({e.msg})")

    def first() -> Any:
        return next((row for _, line in lines if isinstance(row := decode(line), dict)), None)

    def read(indices: range) -> Iterator[tuple[str, str, Any]]:
        for i in indices:
            lineno, line = lines[i]
            yield f"{path}:{lineno}", f"{path.name}:{lineno}", decode(line)

    return _Rows(path.name, len(lines), first, read)


def _list_rows(name: str, where: str, rows: list[Any]) -> _Rows:
    def read(indices: range) -> Iterator[tuple[str, str, Any]]:
        for i in indices:
            yield f"{where}:{i}", f"{name}:{i}", rows[i]

    return _Rows(name, len(rows), lambda: next((r for r in rows if isinstance(r, dict)), None), read)


def _json_rows(path: Path) -> _Rows:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if isinstance(data, dict):
        data = next((data[k] for k in ("data", "rows") if isinstance(data.get(k), list)), data)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of objects (or an object with a list under 'data' or 'rows')")
    return _list_rows(path.name, str(path), data)


def _parquet_rows(path: Path) -> _Rows:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install 'datasets>=3,<6')") from None
    table = pq.read_table(path)

    def read(indices: range) -> Iterator[tuple[str, str, Any]]:
        rows = table.slice(indices.start, len(indices)).to_pylist() if len(indices) else []
        for i, row in zip(indices, rows, strict=True):
            yield f"{path}:{i}", f"{path.name}:{i}", row

    def first() -> Any:
        return table.slice(0, 1).to_pylist()[0] if table.num_rows else None

    return _Rows(path.name, table.num_rows, first, read)


def _hub_rows(source: SourceConfig) -> _Rows:
    name = source.path + (f"/{source.subset}" if source.subset else "") + f"[{source.split}]"
    try:
        import datasets

        ds = datasets.load_dataset(source.path, source.subset, split=source.split)
    except Exception as e:
        hint = (
            ""
            if Path(source.path).expanduser().is_dir()
            else (
                " The hub may be unreachable (or HF_HUB_OFFLINE set); give a local .json/.jsonl/.parquet file as the "
                "path instead."
            )
        )
        raise ValueError(
            f"could not load Hugging Face dataset {source.path!r} (subset={source.subset!r}, "
            f"split={source.split!r}): {type(e).__name__}: {str(e).rstrip('.')}.{hint}"
        ) from e

    def read(indices: range) -> Iterator[tuple[str, str, Any]]:
        for i, row in zip(indices, ds.select(indices), strict=True):
            yield f"{name}:{i}", f"{name}:{i}", row

    return _Rows(name, len(ds), lambda: ds[0] if len(ds) else None, read)


# ---------------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class _Layout:
    kind: str
    prompt: tuple[str, ...]  # candidate fields, the first present one is used
    answer: tuple[str, ...]
    level: tuple[str, ...]
    subject: tuple[str, ...]
    solution: tuple[str, ...]


_PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "math": dict(
        prompt=("problem",), answer=("answer",), level=("level",), subject=("subject", "type"), solution=("solution",)
    ),
    "gsm8k": dict(prompt=("question",), answer=("answer",), level=(), subject=(), solution=("solution",)),
    "dapo": dict(
        prompt=("prompt",),
        answer=("reward_model.ground_truth", "answer", "solution"),
        level=(),
        subject=(),
        solution=(),
    ),
    "custom": dict(
        prompt=("problem",), answer=("answer",), level=("level",), subject=("subject",), solution=("solution",)
    ),
}


def _guess_kind(row: Any) -> str:
    if not isinstance(row, dict):
        return "custom"
    if "problem" in row and ("level" in row or "solution" in row):
        return "math"
    if "question" in row:
        return "gsm8k"
    if "reward_model" in row or isinstance(row.get("prompt"), list):
        return "dapo"
    return "custom"


def _layout(source: SourceConfig, first_row: Any) -> _Layout:
    kind = _guess_kind(first_row) if source.kind == "auto" else source.kind
    fields = dict(_PRESETS[kind])
    for name in fields:
        override = getattr(source, f"{name}_field")
        if override is not None:
            fields[name] = (override,)
    return _Layout(kind=kind, **fields)


def _get(row: dict[str, Any], field: str) -> Any:
    """row[field], where a dotted field ("a.b") reaches into nested objects; None when absent."""
    if field in row:
        return row[field]
    node: Any = row
    for part in field.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _first(row: dict[str, Any], fields: tuple[str, ...]) -> tuple[str | None, Any]:
    for field in fields:
        value = _get(row, field)
        if value is not None:
            return field, value
    return (fields[0] if fields else None), None


def _text(value: Any, field: str | None, loc: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{loc}: field {field!r} holds a {type(value).__name__}, expected text or a number")


_LEVEL = re.compile(r"\s*(?:level\s*)?([1-5])\s*", re.IGNORECASE)
_NO_LEVEL = re.compile(r"\s*(?:level\s*)?\??\s*", re.IGNORECASE)  # "", "?", "Level ?"


def _level(value: Any, field: str | None, loc: str) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):  # NaN: a null read through pandas
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 1 <= value <= 5:
        return int(value)
    if isinstance(value, float) and value.is_integer() and 1 <= value <= 5:
        return int(value)
    if isinstance(value, str):
        if m := _LEVEL.fullmatch(value):
            return int(m.group(1))
        if _NO_LEVEL.fullmatch(value):
            return None
    raise ValueError(f"{loc}: field {field!r} is {value!r}, not a level 1..5 (an integer or text like 'Level 3')")


def _dapo_question(value: Any, field: str | None, loc: str) -> Any:
    if isinstance(value, list):  # chat messages: the (last) user message is the question
        users = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise ValueError(f"{loc}: field {field!r} is a message list without a user message")
        value = users[-1]
    if isinstance(value, str):
        value = value.removeprefix(DAPO_PREFIX).removesuffix(DAPO_SUFFIX).strip()
    return value


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def _gsm8k_gold(text: str) -> str:
    """The number after the last "####", commas removed."""
    return text.rpartition("####")[2].strip().replace(",", "")


def _gsm8k_solution(text: str, answer: str) -> str:
    """Calculator notes removed and the final "#### N" line replaced by a boxed final answer."""
    text = _CALCULATOR.sub("", text)
    head, sep, _ = text.rpartition("####")
    if not sep:
        return text
    head = head.rstrip()
    final = f"The final answer is \\boxed{{{answer}}}."
    return f"{head}\n{final}" if head else final


def _to_problem(row: Any, layout: _Layout, loc: str, default_id: str) -> Problem:
    if isinstance(row, _BadRow):
        raise ValueError(f"{loc}: {row.message}")
    if not isinstance(row, dict):
        raise ValueError(f"{loc}: expected a JSON object, got {type(row).__name__}")
    kind = layout.kind

    prompt_field, prompt = _first(row, layout.prompt)
    if kind == "dapo":
        prompt = _dapo_question(prompt, prompt_field, loc)
    prompt = _text(prompt, prompt_field, loc)
    if prompt is None or not prompt.strip():
        raise ValueError(f"{loc}: missing or empty field {prompt_field!r} (kind {kind})")

    solution_field, solution = _first(row, layout.solution)
    solution = _text(solution, solution_field, loc)
    answer_field, answer = _first(row, layout.answer)
    answer = _text(answer, answer_field, loc)
    if kind == "gsm8k" and answer is not None and "####" in answer:  # HF layout: answer is the solution
        solution, answer = answer, _gsm8k_gold(answer)
    if kind == "math" and (answer is None or not answer.strip()) and solution:
        answer = extract_answer(solution)
    if answer is None or not answer.strip():
        also = f" and no \\boxed{{}} answer in {solution_field!r}" if kind == "math" and solution_field else ""
        raise ValueError(f"{loc}: missing or empty field {answer_field!r}{also} (kind {kind})")
    answer = answer.strip()
    if kind == "gsm8k" and solution is not None:
        solution = _gsm8k_solution(solution, answer)

    level_field, level = _first(row, layout.level)
    subject_field, subject = _first(row, layout.subject)
    subject = _text(subject, subject_field, loc)
    row_id = next((row[k] for k in ("unique_id", "id", "idx") if row.get(k) is not None), default_id)
    return Problem(
        prompt=prompt,
        answer=answer,
        level=_level(level, level_field, loc),
        solution=solution,
        id=str(row_id),
        subject=subject,
    )


# ------------------------------------------------------------------------- slicing and filtering


def _load_rows(source: SourceConfig, skip_bad_rows: bool) -> list[Problem]:
    rows = _open_rows(source)
    if rows.count == 0:
        raise ValueError(f"data source {_describe(source)} is empty: it holds no rows")
    layout = _layout(source, rows.first())
    problems: list[Problem] = []
    bad: list[str] = []
    for loc, default_id, row in rows.read(range(rows.count)[source.row_slice()]):
        try:
            problems.append(_to_problem(row, layout, loc, default_id))
        except ValueError as e:
            if not skip_bad_rows:
                raise
            bad.append(str(e))
    if bad:
        warnings.warn(
            f"data source {source.path!r}: skipped {len(bad)} malformed row(s); the first: {bad[0]}", stacklevel=3
        )
    return problems


def _row_slice(problems: list[Problem], source: SourceConfig) -> list[Problem]:
    return problems[source.row_slice()]


def _subject_key(subject: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", subject.lower().replace("&", " and ")).strip("_")


def _filter(problems: list[Problem], source: SourceConfig) -> list[Problem]:
    """The levels and subjects filters, then the per-level cap (first problems in source order)."""
    if source.levels is not None:
        problems = [p for p in problems if p.level in source.levels]
    if source.subjects is not None:
        wanted = {_subject_key(s) for s in source.subjects}
        problems = [p for p in problems if p.subject is not None and _subject_key(p.subject) in wanted]
    if source.per_level is not None:
        problems = first_per_level(problems, source.per_level)
    return problems


def first_per_level(problems: Sequence[Problem], n: int) -> list[Problem]:
    """At most `n` problems of each level, the first in order (problems without a level count as one level)."""
    counts: dict[int | None, int] = {}
    kept = []
    for p in problems:
        if counts.get(p.level, 0) < n:
            counts[p.level] = counts.get(p.level, 0) + 1
            kept.append(p)
    return kept


def _sample(problems: list[Problem], size: int, rng: random.Random) -> list[Problem]:
    """`size` problems drawn without repetition; past the rows there are, every row is used
    floor(size / n) times and a random remainder once more (to up-weight a source in a mixture)."""
    if size <= len(problems):
        return rng.sample(problems, size)
    repeats, rest = divmod(size, len(problems))
    out = problems * repeats + rng.sample(problems, rest)
    rng.shuffle(out)
    return out


def _describe(source: SourceConfig) -> str:
    parts = [repr(source.path)]
    for name in ("kind", "subset", "rows", "levels", "subjects", "per_level"):
        value = getattr(source, name)
        if value is not None and not (name == "kind" and value == "auto"):
            parts.append(f"{name}={value!r}")
    if testbed_name(source.path) is None and not Path(source.path).expanduser().is_file():
        parts.append(f"split={source.split!r}")
    return " ".join(parts[:1]) + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")

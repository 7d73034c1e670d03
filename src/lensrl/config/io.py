"""Reading and writing run configs: defaults, then a YAML file's deltas, then `key=value` overrides;
and a run's identity, the keys where two configs differ.

Every invalid value and unknown key raises a `ConfigError` that names the key. A delta that changes
`algo.advantage` (a config file over the defaults, or all the overrides of one call together) keeps
the common settings and those the new estimator shares by name with the old one (`eps`; `alpha`
between lens and uniform_negative; `scale` between grpo and uniform_negative) and drops the others;
a setting the delta itself gives must apply to the new estimator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lensrl.config.algo import ALGOS, own_settings, switched_settings
from lensrl.config.schema import TrainConfig
from lensrl.config.section import ConfigError
from lensrl.testbed import is_builtin_config, testbed_config


def _merge(base: dict[str, Any], delta: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def _parse_override(item: str) -> dict[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. algo.alpha=0.5)")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"override {item!r}: the value is not valid YAML ({problem}); quote it to pass it as a string, "
            f"e.g. '{key}=\"{raw}\"'"
        ) from None
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file's deltas, then `key=value` overrides; validated.

    `path` "testbed:NAME" is a built-in testbed's default run or a preset such as "testbed:quick"
    (`lensrl/testbed/NAME.yaml`).
    """
    data: dict[str, Any] = TrainConfig().model_dump()
    if path is not None:
        path = testbed_config(str(path)) if is_builtin_config(str(path)) else Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        delta = _read_yaml(path) or {}
        if not isinstance(delta, dict):
            raise ConfigError(f"{path}: expected a mapping of config sections")
        data = _apply(data, delta)
        _validate(data, f"{path}: ")  # the file's own errors name the file, before any override is applied
    return _with_overrides(data, overrides or [])


def _read_yaml(path: Path) -> Any:
    """A config file's YAML; a syntax error is a `ConfigError` "FILE:LINE:COLUMN: problem" (1-based)."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(x for x in (e.context, e.problem) if x) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None


def _validate(data: dict[str, Any], where: str = "") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        lines = "\n".join(f"  {_describe(err)}" for err in e.errors())
        raise ConfigError(f"{where}invalid config:\n{lines}") from None


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """`config` with `key=value` overrides on top; validated."""
    return _with_overrides(config.model_dump(), overrides)


def _with_overrides(data: dict[str, Any], overrides: list[str]) -> TrainConfig:
    delta: dict[str, Any] = {}
    for item in overrides:  # one delta, so that `algo.scope=mixed algo.advantage=grpo` is an error in any order
        delta = _merge(delta, _parse_override(item))
    return _validate(_apply(data, delta))


def _apply(tree: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """`delta` merged into `tree`; a delta that changes `algo.advantage` first switches `tree`'s `algo` to the
    new estimator (keeping the settings the two share by name, module docstring)."""
    algo, new = tree.get("algo"), delta.get("algo")
    name = new.get("advantage") if isinstance(new, dict) else None
    if isinstance(algo, dict) and name in ALGOS and name != algo.get("advantage"):  # unknown: validation says so
        tree = {**tree, "algo": switched_settings(algo, name)}
    return _merge(tree, delta)


def _key(err: Any) -> tuple[str, str | None]:
    """A validation error's dotted key without the union's tag, and the estimator that tag names (if any)."""
    loc = [str(x) for x in err["loc"]]
    if loc[:1] == ["algo"] and len(loc) > 1 and loc[1] in ALGOS:
        return ".".join([loc[0], *loc[2:]]), loc[1]
    return ".".join(loc), None


def _describe(err: Any) -> str:
    """One line of a `ConfigError`: the key at fault and what is wrong with it."""
    key, estimator = _key(err)
    if err["type"] == "extra_forbidden":
        name = key.rsplit(".", 1)[-1]
        if estimator is not None and any(name in model.model_fields for model in ALGOS.values()):
            reads = ", ".join(own_settings(estimator))
            return f"{key} does not apply to algo.advantage={estimator} (it reads: {reads})"
        return f"{key}: unknown key"
    if err["type"] == "union_tag_invalid":
        return f"{key}.advantage: unknown advantage estimator {err['ctx']['tag']!r}; known: {', '.join(sorted(ALGOS))}"
    if err["type"] == "value_error" and str(err["ctx"]["error"]).startswith(f"{key}: "):
        return str(err["ctx"]["error"])  # the message names the key itself (LENS settings)
    got = f" (got {err.get('input')!r})" if key else ""
    return f"{key or '(config)'}: {err['msg']}{got}"


BOOKKEEPING = (
    "run.output_dir",
    "run.progress",
    "run.save_every",
    "run.keep_checkpoints",
    "optim.micro_batch_size",
    "run.report_to",
    "run.sample_every",
    "run.sample_groups",
    "run.diagnostic_every",
)
"""Fields that do not change what a run computes: two runs that differ only here are the same run
(`micro_batch_size` splits the same gradient sum differently, which changes only float rounding; a
run that ran out of memory can resume with smaller micro-batches; the diagnostic leaves weights and
random states as they were)."""


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys (`run.steps`)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(
    run_dir: str | Path, config: TrainConfig, ignore: tuple[str, ...] = BOOKKEEPING
) -> list[str] | None:
    """The keys (dotted) where the run folder's config.yaml and `config` differ, besides `ignore`;
    None when the folder has no config.yaml.

    The saved config is read through today's schema, so a field added since it was written takes its
    default, and one that no longer exists is a difference.
    """
    saved = Path(run_dir) / "config.yaml"
    if not saved.exists():
        return None
    return tree_differences(yaml.safe_load(saved.read_text()), config, ignore)


def tree_differences(tree: Any, config: TrainConfig, ignore: tuple[str, ...] = BOOKKEEPING) -> list[str]:
    """The keys (dotted) where a saved config (a config.yaml's or a run record's mapping) and `config`
    differ, besides `ignore`; read as `config_differences` reads a folder's."""
    try:
        then = flatten(TrainConfig.model_validate(tree).model_dump())
    except ValidationError as e:
        return sorted({_key(err)[0] for err in e.errors()})
    now = flatten(config.model_dump())
    return sorted(k for k in then.keys() | now.keys() if k not in ignore and then.get(k) != now.get(k))


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(), sort_keys=False))

"""The built-in testbeds: seeded arithmetic problems and small warm-started policies to run RL on.

Two testbeds, each a problem generator and a committed base policy, selected by name wherever a
model or a data source is named (`testbed` is `testbed:carry`):

* `carry` (`lensrl.testbed.carry`): chains of multi-digit additions and subtractions whose
  mistakes are capacity limits of the 1M-parameter policy (carries and borrows it learnt only partly);
* `signs` (`lensrl.testbed.signs`): chains of small numbers that the policy can compute reliably but
  often computes with minus signs dropped, so that many of its mistakes are confident ones.

`base_policy_path(name)` is the folder of a committed base policy (loadable with the Auto classes);
`lensrl.training.warmstart` rebuilds it and `lensrl.evaluation.profile` measures what RL starts from.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lensrl.records import Problem

__all__ = [
    "TESTBEDS",
    "base_policy_path",
    "build_tokenizer",
    "generate_problems",
    "is_builtin_config",
    "make_problem",
    "task",
    "testbed_config",
    "testbed_name",
    "warmstart_problems",
    "warmstart_record",
]

TESTBEDS = ("carry", "signs")
"""The testbeds by name; `task(name)` is the task module (LEVELS, generate_problems, demonstration)."""
POLICY_FOLDERS = {"carry": "carry_policy", "signs": "signs_policy"}
_LAZY = {  # imported on first use: naming a testbed (the run config does) loads neither its tasks nor a tokenizer
    "generate_problems": "lensrl.testbed.carry",
    "make_problem": "lensrl.testbed.carry",
    "build_tokenizer": "lensrl.testbed.tokenizer",
}
WEIGHTS_FILE = "model.safetensors"
PREFIX = "testbed"
PRESETS = ("quick",)
"""Built-in run configs that are no testbed of their own (`--config testbed:quick`: a one-minute first run)."""


def testbed_name(path: str) -> str | None:
    """The testbed a model or data path names ("testbed" -> "carry", "testbed:signs" -> "signs"), else None."""
    if path == PREFIX:
        return "carry"
    if not path.startswith(PREFIX + ":"):
        return None
    name = path[len(PREFIX) + 1 :]
    if name not in TESTBEDS:
        raise ValueError(f"unknown testbed {path!r}; known: {', '.join(f'testbed:{n}' for n in TESTBEDS)}")
    return name


def task(name: str) -> ModuleType:
    """The task module of testbed `name` (`lensrl.testbed.carry`, `lensrl.testbed.signs`)."""
    if name not in TESTBEDS:
        raise ValueError(f"unknown testbed {name!r}; known: {', '.join(TESTBEDS)}")
    return importlib.import_module(f"lensrl.testbed.{name}")


def base_policy_path(name: str = "carry") -> Path:
    """Folder of testbed `name`'s committed base policy.

    Loading a policy never trains one: when the committed weights are missing (a checkout without
    them), this is an error that says how to rebuild them.
    """
    task(name)
    folder = Path(__file__).resolve().parent / POLICY_FOLDERS[name]
    if not (folder / WEIGHTS_FILE).is_file():
        raise ValueError(
            f"the {name} testbed's base policy is missing ({folder / WEIGHTS_FILE} not found). Restore it with "
            f"`git checkout -- {folder}`, or rebuild it (a few minutes on CPU) with "
            f"`lensrl testbed-build --testbed {name} --output-dir DIR` and train with model.name_or_path=DIR"
        )
    return folder


def warmstart_record(name: str) -> dict[str, Any]:
    """The record of the warm-start that built testbed `name`'s committed base policy (its warmstart.json:
    the `lensrl.training.warmstart.WarmStartConfig` under "config", the command, the final loss, ...)."""
    task(name)
    return json.loads((Path(__file__).resolve().parent / POLICY_FOLDERS[name] / "warmstart.json").read_text())


def warmstart_problems(name: str) -> list[Problem]:
    """The task problems of testbed `name`'s committed warm-start stream, in training order, as drawn
    before the teacher wrote their solutions (`warmstart.train_policy`, from the policy's warmstart.json)."""
    config = warmstart_record(name)["config"]
    return task(name).generate_problems(config["steps"] * config["batch_size"], config["levels"], seed=config["seed"])


def is_builtin_config(path: str) -> bool:
    """Whether a `--config` value names a built-in run config ("testbed:NAME") rather than a file."""
    return path == PREFIX or path.startswith(PREFIX + ":")


def testbed_config(path: str) -> Path:
    """The YAML file of a built-in run config: a testbed's default run (`lensrl train --config testbed:signs`)
    or a preset (`testbed:quick`, `PRESETS`)."""
    preset = path.removeprefix(PREFIX + ":")
    name = preset if preset in PRESETS else testbed_name(path)
    config = Path(__file__).resolve().parent / f"{name}.yaml"
    if not config.is_file():
        raise ValueError(f"the {name} testbed has no default run config; the built-in defaults are its run")
    return config


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lensrl.testbed' has no attribute {name!r}")

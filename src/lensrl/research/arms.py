"""What a study is: its arms, seeds, base config and folders (`Study`, `Arm`), and the file that defines
a project's studies (`load_studies`); `lensrl.research.study` runs them.

A studies file is plain Python that defines `STUDIES`, a dict of `Study` by name (this repository's
is experiments/studies.py, the default of `lensrl study NAME --studies FILE`). No heavy imports:
reading one loads neither torch nor the trainer.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_STUDIES = Path("experiments/studies.py")
"""Where `lensrl study NAME` looks for NAME unless given `--studies FILE` (relative to the current directory)."""


@dataclass(frozen=True)
class Arm:
    """One arm of a study: its name (in run folders, records and reports) and its config overrides."""

    name: str
    overrides: tuple[str, ...] = ()
    steps_factor: int = 1  # run.steps = steps_factor x the resolved config's run.steps (`study.arm_config`)


@dataclass(frozen=True)
class Study:
    """A comparison of arms over seeds: every arm runs once per seed from the same base config, with
    the study's and then the arm's overrides on top."""

    name: str
    question: str
    arms: tuple[Arm, ...]  # the first is the reference the others are compared with
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: tuple[str, ...] = ()  # common to every arm
    config: str | None = None  # base config of every arm (`load_config`'s path), unless --config is given
    results: str | None = None  # default results folder (None: results/<name>)
    in_overview: bool = True  # drawn in the overview of the studies beside it (False: it evaluates on another set)

    @property
    def results_dir(self) -> Path:
        """Where the study's report and run records go by default: `results`, else results/<name>/."""
        return Path(self.results or f"results/{self.name}")


def load_studies(path: str | Path = DEFAULT_STUDIES) -> dict[str, Study]:
    """The `STUDIES` of a Python file (a dict of `Study` by name), in the file's order.

    A missing file, a file without `STUDIES` or one whose entries are not studies under their own
    names is a `ValueError` that says where it looked."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"no studies file {path} (looked in {path.resolve().parent}); give a Python file that defines "
            "STUDIES, a dict of lensrl.Study by name, with --studies FILE"
        )
    module_name = f"_lensrl_studies_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look a module up by its name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(module_name, None)
    studies = getattr(module, "STUDIES", None)
    if not isinstance(studies, Mapping):
        raise ValueError(f"{path} defines no STUDIES (a dict of lensrl.Study by name)")
    wrong = [name for name, study in studies.items() if not isinstance(study, Study) or study.name != name]
    if wrong:
        raise ValueError(f"{path}: STUDIES[{wrong[0]!r}] is not a Study of that name")
    return dict(studies)


def find_study(name: str, studies: Mapping[str, Study], where: str | Path = DEFAULT_STUDIES) -> Study:
    """`studies[name]`; an unknown name is a `ValueError` naming `where` the studies came from and the known ones."""
    if name not in studies:
        raise ValueError(f"unknown study {name!r} in {where}; known: {', '.join(studies) or 'none'}")
    return studies[name]

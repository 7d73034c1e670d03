"""LENS's settings read from a mapping of values: the one parser the run config, TRL and verl share.

Each caller spells the settings its own way (`algo.alpha`, `lens_alpha`, `algorithm.lens.alpha`);
`read_lens_settings` takes them by their `LensSettings` names with the caller's prefix, validates
them through `LensSettings` and names the key at fault as the caller spells it. `SETTING_HELP` is
the one-line description of each setting, read from `LensSettings`' attribute docstrings.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from collections.abc import Mapping
from typing import Any

from lensrl.core.advantages import LensSettings

SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(LensSettings))
"""The names of LENS's settings, in `LensSettings`' order."""


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """The docstring written under each annotated attribute of a class, by attribute name."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {
        field.target.id: inspect.cleandoc(doc.value.value)
        for field, doc in zip(body, body[1:])
        if isinstance(field, ast.AnnAssign)
        and isinstance(field.target, ast.Name)
        and isinstance(doc, ast.Expr)
        and isinstance(doc.value, ast.Constant)
        and isinstance(doc.value.value, str)
    }


SETTING_HELP: dict[str, str] = _attribute_docstrings(LensSettings)
"""Setting name -> its one-line description (`LensSettings`' attribute docstring)."""


def read_lens_settings(values: Mapping[str, Any], where: str) -> LensSettings:
    """The `LensSettings` of `values` (setting name -> value; `LensSettings`' defaults for those not given).

    `where` is the caller's prefix of a setting's key ("algo.", "lens_", "algorithm.lens."): an
    unknown name, or a value `LensSettings` rejects, raises a ValueError that begins with the key
    at fault, e.g. "lens_alpha: alpha must be a finite number >= 0, got -1.0".
    """
    unknown = [name for name in values if name not in SETTINGS]
    if unknown:
        raise ValueError(f"{where}{unknown[0]}: unknown LENS setting; known: {', '.join(where + s for s in SETTINGS)}")
    for name, value in values.items():  # one at a time, so that the error names the one at fault
        try:
            LensSettings(**{name: value})
        except ValueError as exc:
            raise ValueError(f"{where}{name}: {exc}") from None
    return LensSettings(**values)

"""The base of every config section: unknown keys are errors, assignments are validated, and each
field's docstring is its description."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), use_attribute_docstrings=True
    )

"""MkDocs hook: the configuration reference, generated from `lensrl.config` so that it cannot drift.

The page that holds the line `<!-- config-reference -->` gets, in its place, every section of
`TrainConfig` with each field's dotted key, type, default, bounds and docstring (pydantic keeps
the docstrings as `FieldInfo.description`: the config models set `use_attribute_docstrings`).
The walk is generic: a field whose type is a model is a section of its own; a field whose type is
a union of models (e.g. one model per advantage estimator, told apart by a discriminator field)
lists the fields all members share once, then each member's own; a model inside a list (a data
source) is documented once, after the section that holds it.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = "<!-- config-reference -->"


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _union_members(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return ()


def _models_in(tp: Any) -> list[type[BaseModel]]:
    """Models nested in a type (list[Source], Source | None, ...), outermost first."""
    if _is_model(tp):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models_in(arg)]


def type_name(tp: Any) -> str:
    """A type as a reader of a YAML file needs it: `int`, `one of "a", "b"`, `list of str`, ... ."""
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(
            f"`{yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}`"
            for v in typing.get_args(tp)
        )
    if members := _union_members(tp):
        return " or ".join(type_name(m) for m in members)
    if typing.get_origin(tp) in (list, tuple, set):
        return "list of " + " or ".join(type_name(a) for a in typing.get_args(tp) if a is not Ellipsis)
    if _is_model(tp):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return getattr(tp, "__name__", str(tp))


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in YAML (models: their non-default fields)."""
    value = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"

    def plain(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return v.model_dump(exclude_unset=True)
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    text = yaml.safe_dump(plain(value), default_flow_style=True, width=10_000).strip()
    return f"`{text.removesuffix('...').strip()}`"


BOUNDS = {
    annotated_types.Ge: ("ge", ">= {}"),
    annotated_types.Gt: ("gt", "> {}"),
    annotated_types.Le: ("le", "<= {}"),
    annotated_types.Lt: ("lt", "< {}"),
    annotated_types.MinLen: ("min_length", "at least {} item(s)"),
    annotated_types.MaxLen: ("max_length", "at most {} item(s)"),
}


def bounds_text(field: FieldInfo) -> str:
    """The field's numeric and length bounds, e.g. `>= 0, < 1`."""
    parts = []
    for item in field.metadata:
        for kind, (attr, template) in BOUNDS.items():
            if isinstance(item, kind):
                parts.append(template.format(getattr(item, attr)))
    return ", ".join(parts)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def field_rows(model: type[BaseModel], prefix: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """Table rows of a model's plain fields (not sections, not unions of models), `skip` left out."""
    rows = []
    for name, field in model.model_fields.items():
        if name in skip or _is_model(field.annotation) or _union_of_models(field.annotation):
            continue
        rows.append(
            f"| `{prefix}{name}` | {_cell(type_name(field.annotation))} | {_cell(default_text(field))} | "
            f"{_cell(bounds_text(field))} | {_cell(field.description or '')} |"
        )
    return rows


def _union_of_models(tp: Any) -> bool:
    members = _union_members(tp)
    return bool(members) and all(_is_model(m) for m in members)


HEADER = ["| key | type | default | bounds | meaning |", "|---|---|---|---|---|"]


def _paragraph(text: str | None) -> list[str]:
    return [" ".join(text.split()), ""] if text else []


def _same(a: FieldInfo, b: FieldInfo) -> bool:
    return (a.annotation, a.description, repr(a.get_default(call_default_factory=True)), a.metadata) == (
        b.annotation,
        b.description,
        repr(b.get_default(call_default_factory=True)),
        b.metadata,
    )


def render_model(
    model: type[BaseModel], prefix: str, level: int, seen: set[type[BaseModel]], skip: frozenset[str] = frozenset()
) -> list[str]:
    """A model's docstring and fields as a table, then its sections (level + 1) and the models its lists hold."""
    out = _paragraph(model.__doc__)
    rows = field_rows(model, prefix, skip)
    if rows:
        out += HEADER + rows + [""]
    nested: list[type[BaseModel]] = []
    for name, field in model.model_fields.items():
        tp = field.annotation
        if name in skip:
            continue
        if _is_model(tp):
            out += [f"{'#' * (level + 1)} `{prefix}{name}`", "", *_paragraph(field.description)]
            out += render_model(tp, f"{prefix}{name}.", level + 1, seen)
        elif _union_of_models(tp):
            out += render_union(f"{prefix}{name}", field, level + 1, seen)
        else:
            nested += [m for m in _models_in(tp) if m not in seen and m not in nested]
    for sub in nested:
        seen.add(sub)
        holders = [f"`{prefix}{n}`" for n, f in model.model_fields.items() if sub in _models_in(f.annotation)]
        out += [f"{'#' * (level + 1)} {sub.__name__}", "", f"Each entry of {', '.join(holders)}.", ""]
        out += render_model(sub, "", level + 1, seen)
    return out


def render_union(key: str, field: FieldInfo, level: int, seen: set[type[BaseModel]]) -> list[str]:
    """A union of models: the fields every member shares (once), then each member's own."""
    members = _union_members(field.annotation)
    disc = field.discriminator if isinstance(field.discriminator, str) else None
    default = field.get_default(call_default_factory=True)
    strict = all(m.model_config.get("extra") == "forbid" for m in members)
    out = [f"{'#' * level} `{key}`", "", *_paragraph(field.description)]
    out += [
        f"One of {len(members)} models, chosen by "
        + (f"`{key}.{disc}`" if disc else "its fields")
        + (f" (default: `{getattr(default, disc)}`)" if disc and isinstance(default, BaseModel) else "")
        + ("; a field that the chosen model does not have is an error." if strict else "."),
        "",
    ]
    first = members[0].model_fields
    common = frozenset(
        n
        for n, f in first.items()
        if n != disc and all(n in m.model_fields and _same(f, m.model_fields[n]) for m in members[1:])
    )
    if common:
        out += [
            "Fields of every member:",
            "",
            *HEADER,
            *field_rows(members[0], f"{key}.", frozenset(first) - common),
            "",
        ]
    for member in members:
        title = f"`{key}.{disc}: {member.model_fields[disc].get_default()}`" if disc else member.__name__
        own = render_model(member, f"{key}.", level + 1, seen, common | ({disc} if disc else frozenset()))
        out += [f"{'#' * (level + 1)} {title}", "", *(own or ["No fields of its own.", ""])]
    return out


def config_reference() -> str:
    """The whole reference: one `##` section per section of `TrainConfig`."""
    from lensrl.config import TrainConfig

    return "\n".join(render_model(TrainConfig, "", 1, set()))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, config_reference())

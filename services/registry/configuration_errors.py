"""A pydantic ValidationError of a configuration as one line for people: `rate_limits[0].rps`, not
`rate_limits.0.rps`; "use true, false or auto, not 'maybe'", not the union's members; a suggestion
where a field name is close to a known one. No validator internals reach the user."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

# Union members pydantic names in an error's location (`https.bool`, `port.int`).
_TYPE_TAGS = {"bool", "int", "float", "str", "none", "list", "dict"}


def _tags(model: type[BaseModel]) -> set[Any]:
    """The names pydantic gives a union member in a location: its class name and its `type`."""
    field = model.model_fields.get("type")
    literal = set(typing.get_args(field.annotation)) if field is not None else set()
    return {model.__name__, *literal}


def _where(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """`rate_limits[0].key.header` from pydantic's `('rate_limits', 0, 'key', 'header', 'header')`:
    the location walked through the models, without the union members pydantic names on the way."""
    text = ""
    current: list[type[BaseModel]] | None = [model]
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        if current is not None:
            named = [one for one in current if part in _tags(one)]
            owners = [one for one in current if part in one.model_fields]
            if len(current) > 1 and named:
                # A union: pydantic names the member before its fields.
                current = named
                continue
            if owners:
                current = _models_in(owners[0].model_fields[part].annotation) or None
            elif part in _TYPE_TAGS or "[" in part:
                continue
            else:
                current = None
        elif part in _TYPE_TAGS or "[" in part:
            continue
        text += f".{part}" if text else part
    return text


def describe(value: Any) -> str:
    """A value as the YAML that wrote it: 'maybe', -5, true, null, a list, a mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model whose field the location's last part names (for suggestions)."""
    current = [model]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        owners = [one for one in current if part in one.model_fields]
        if owners:
            current = _models_in(owners[0].model_fields[part].annotation) or current
        else:
            current = [one for one in current if part in _tags(one)] or current
    return current[0]


def _closest(field: str, model: type[BaseModel]) -> str:
    match = difflib.get_close_matches(field, list(model.model_fields), n=1)
    return f" (did you mean `{match[0]}`?)" if match else ""


def _message(item: ErrorDetails) -> str:
    """What is wrong with a value, in words; `item` is one of ValidationError.errors()."""
    kind, value, ctx = item["type"], item.get("input"), item.get("ctx") or {}
    given = f", not {describe(value)}"
    if kind == "value_error":
        return str(item["msg"]).removeprefix("Value error, ")
    if kind in ("bool_type", "bool_parsing"):
        return f"use true or false{given}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"use a whole number{given}"
    if kind in ("float_type", "float_parsing"):
        return f"use a number{given}"
    if kind == "string_type":
        return f"use text{given}"
    if kind == "list_type":
        return f"use a list (one `- item` a line){given}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"use a mapping (`key: value` lines){given}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"use {expected}{given}"
    if kind == "greater_than_equal":
        return f"use {_number(ctx['ge'])} or more{given}"
    if kind == "greater_than":
        return f"use more than {_number(ctx['gt'])}{given}"
    if kind == "less_than_equal":
        return f"use {_number(ctx['le'])} or less{given}"
    if kind == "less_than":
        return f"use less than {_number(ctx['lt'])}{given}"
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"`type` must be one of {expected}, not {describe(ctx.get('tag'))}"
    if kind == "union_tag_not_found":
        return "needs a `type`"
    if kind in ("string_too_long", "too_long"):
        return f"too long: at most {ctx.get('max_length')}"
    # Anything else: pydantic's sentence, without its internals.
    return str(item["msg"]).split(" [", 1)[0].rstrip(".").lower()


def format_validation_error(error: ValidationError, model: type[BaseModel]) -> str:
    """Every problem, one per location, joined on one line."""
    parts: list[str] = []
    seen: set[str] = set()
    for item in error.errors():
        loc = tuple(item["loc"])
        where = _where(model, loc)
        if where in seen:
            continue  # another member of the same union: the first says enough
        seen.add(where)
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown field `{where}`{_closest(str(loc[-1]), _model_at(model, loc))}")
        elif item["type"] == "missing":
            parts.append(f"`{where}` is required")
        elif not where:
            parts.append(_message(item))
        else:
            parts.append(f"`{where}`: {_message(item)}")
    return "; ".join(parts)

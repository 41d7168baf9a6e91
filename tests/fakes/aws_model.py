"""Requests in AWS's query protocols (EC2's, and the Query protocol ELBv2 speaks) read back into the
operation's input shape with the botocore service model, and checked against what the model
publishes: required members, string lengths, numeric ranges, list sizes and patterns.

Enums are not checked: AWS's are open (a new instance type is accepted before the SDK lists it, and an
unknown one gets the service's own error, e.g. `InvalidInstanceType`). Serialization follows
botocore's `EC2Serializer` and `QuerySerializer` (botocore/serialize.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape

# The model's patterns use Unicode classes, which Python's `re` lacks: the nearest it has (\w takes
# letters and a little more, which the patterns that use \p{L} also allow).
_UNICODE_CLASSES = {r"\p{L}": r"\w", r"\p{N}": r"\d", r"\p{Z}": r" \u00a0\u2000-\u200b\u2028\u2029\u3000"}


@dataclass(frozen=True)
class Problem:
    code: str
    message: str


@cache
def service_model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def operation(service: str, action: str) -> OperationModel | None:
    model = service_model(service)
    return model.operation_model(action) if action in model.operation_names else None


def _key(shape: Shape, default: str, ec2: bool) -> str:
    if ec2:
        if "queryName" in shape.serialization:
            return str(shape.serialization["queryName"])
        name = shape.serialization.get("name")
        return name[0].upper() + name[1:] if name else default
    return str(shape.serialization.get("name", default))


def _present(params: dict[str, str], key: str) -> bool:
    return key in params or any(name.startswith(key + ".") for name in params)


def read(shape: Shape, params: dict[str, str], prefix: str = "", ec2: bool = False) -> Any:
    """The value serialized under `prefix` (the whole input when empty)."""
    if isinstance(shape, StructureShape):
        found = {}
        for name, member in shape.members.items():
            key = _key(member, name, ec2)
            full = f"{prefix}.{key}" if prefix else key
            if _present(params, full):
                found[name] = read(member, params, full, ec2)
        return found
    if isinstance(shape, ListShape):
        if ec2:
            base = prefix
        elif shape.serialization.get("flattened"):
            member_name = shape.member.serialization.get("name")
            base = ".".join([*prefix.split(".")[:-1], member_name]) if member_name else prefix
        else:
            base = f"{prefix}.{shape.member.serialization.get('name', 'member')}"
        items, index = [], 1
        while _present(params, f"{base}.{index}"):
            items.append(read(shape.member, params, f"{base}.{index}", ec2))
            index += 1
        return items
    if isinstance(shape, MapShape):
        entry = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
        key_name = shape.key.serialization.get("name", "key")
        value_name = shape.value.serialization.get("name", "value")
        mapping, index = {}, 1
        while _present(params, f"{entry}.{index}"):
            key = params.get(f"{entry}.{index}.{key_name}", "")
            mapping[key] = read(shape.value, params, f"{entry}.{index}.{value_name}", ec2)
            index += 1
        return mapping
    raw = params.get(prefix, "")
    if shape.type_name in ("integer", "long"):
        try:
            return int(raw)
        except ValueError:
            return raw
    if shape.type_name == "boolean":
        return raw == "true"
    return raw


def _pattern(pattern: str) -> re.Pattern[str]:
    for unicode_class, nearest in _UNICODE_CLASSES.items():
        pattern = pattern.replace(unicode_class, nearest)
    return re.compile(pattern)


def check(shape: Shape, value: Any, path: str = "") -> list[Problem]:
    """What `value` breaks of the model's constraints for `shape`."""
    meta = shape.metadata
    where = path or "request"
    if isinstance(shape, StructureShape):
        problems = [
            Problem(
                "MissingParameter",
                f"The request must contain the parameter {f'{path}.' if path else ''}{name}",
            )
            for name in shape.required_members
            if name not in value
        ]
        for name, item in value.items():
            problems += check(shape.members[name], item, f"{path}.{name}" if path else name)
        return problems
    if isinstance(shape, ListShape):
        problems = []
        if "min" in meta and len(value) < meta["min"]:
            problems.append(
                Problem("InvalidParameterValue", f"{where} must have at least {meta['min']} items")
            )
        if "max" in meta and len(value) > meta["max"]:
            problems.append(
                Problem("InvalidParameterValue", f"{where} must have at most {meta['max']} items")
            )
        for index, item in enumerate(value, 1):
            problems += check(shape.member, item, f"{where}.{index}")
        return problems
    if isinstance(shape, MapShape):
        return [problem for item in value.values() for problem in check(shape.value, item, where)]
    if shape.type_name == "string" and isinstance(value, str):
        if "min" in meta and len(value) < meta["min"]:
            return [Problem("ValidationError", f"{where} must be at least {meta['min']} characters long")]
        if "max" in meta and len(value) > meta["max"]:
            return [Problem("ValidationError", f"{where} must be at most {meta['max']} characters long")]
        if "pattern" in meta and not _pattern(meta["pattern"]).search(value):
            return [
                Problem(
                    "ValidationError",
                    f"Value '{value}' at '{where}' failed to satisfy constraint: "
                    f"Member must satisfy regular expression pattern: {meta['pattern']}",
                )
            ]
    if shape.type_name in ("integer", "long") and isinstance(value, int):
        low, high = meta.get("min", value), meta.get("max", value)
        if not low <= value <= high:
            bounds = f"between {meta.get('min', '-inf')} and {meta.get('max', 'inf')}"
            return [
                Problem("InvalidParameterValue", f"Value ({value}) for parameter {where} must be {bounds}")
            ]
    return []

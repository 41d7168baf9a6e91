"""Turning responses into tables, lines and JSON, by the column templates the protos carry."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

from cli.fit import fit, natural_width

if TYPE_CHECKING:
    from google._upb._message import FieldDescriptor as UpbFieldDescriptor

PLACEHOLDER = re.compile(r"\{([^{}|]+)(?:\|([a-z]+))?\}")

# Piped output is never cut to a terminal's width: scripts read whole values.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 100_000)


def resolve(obj: Any, path: str) -> Any:
    """`status.hostname` on a message; through a repeated field it maps (`members.user`)."""
    value = obj
    for part in path.split("."):
        if isinstance(value, list):
            value = [resolve(item, part) for item in value]
        elif isinstance(value, Message):
            field = value.DESCRIPTOR.fields_by_name.get(part)
            if field is None:
                return ""
            value = getattr(value, part)
            if field.is_repeated and not _is_map(field):
                value = list(value)
            elif field.enum_type is not None:
                value = (field.enum_type, value)
        elif isinstance(value, dict):
            value = value.get(part, "")
        else:
            return ""
    return value


def _is_map(field: FieldDescriptor | UpbFieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _format(value: Any, how: str | None) -> str:
    if how == "check":
        return "✓" if value is True else ""
    if how == "count":
        return str(len(value)) if isinstance(value, list) else "0"
    if how == "join":
        return " ".join(str(item) for item in value) if isinstance(value, list) else str(value)
    if how == "time":
        if isinstance(value, Timestamp) and value.ByteSize():
            moment = value.ToDatetime(tzinfo=UTC)
            return moment.strftime("%Y-%m-%d %H:%M:%S")
        return ""
    if isinstance(value, tuple):
        enum, number = value
        names = [item.name for item in enum.values]
        prefix = _common_prefix(names)
        return str(enum.values_by_number[number].name[len(prefix) :].lower()) if number else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return str(value)


def _common_prefix(names: Sequence[str]) -> str:
    prefix = names[0] if names else ""
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    return prefix[: prefix.rfind("_") + 1]


def fill(template: str, *sources: Any) -> str:
    """`"Delete the gateway {name}?"` over the first source that has the field."""

    def one(match: re.Match[str]) -> str:
        for source in sources:
            value = resolve(source, match.group(1))
            if value not in ("", [], None):
                return _format(value, match.group(2))
        return ""

    return PLACEHOLDER.sub(one, template)


def parse_columns(specs: Sequence[str]) -> list[tuple[str, str]]:
    return [tuple(spec.split("=", 1)) for spec in specs]  # type: ignore[misc]


def table(columns: Sequence[tuple[str, str]], rows: Sequence[Any], width: int | None = None) -> Table:
    """The rows under the columns, fitted to `width` (the terminal's) by `fit`: names and states
    whole, free text wrapped, the least useful columns left out only when nothing else fits."""
    headers = [header for header, _ in columns]
    cells = [[fill(template, row) for _, template in columns] for row in rows]
    shown, widths = fit(headers, cells, console.width if width is None else width)
    grid = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for index in shown:
        wraps = widths[index] < natural_width(headers[index], cells, index)
        grid.add_column(headers[index], no_wrap=not wraps, width=widths[index], overflow="fold")
    for row_cells in cells:
        grid.add_row(*(row_cells[index] for index in shown))
    return grid


def print_table(columns: Sequence[tuple[str, str]], rows: Sequence[Any]) -> None:
    console.print(table(columns, rows))


def print_json(message: Message) -> None:
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2))


def lines(message: Message, path: str) -> list[str]:
    found = resolve(message, path)
    flat: list[str] = []
    stack = [found]
    while stack:
        item = stack.pop(0)
        if isinstance(item, list):
            stack[0:0] = item
        elif item not in ("", None):
            flat.append(str(item))
    return flat

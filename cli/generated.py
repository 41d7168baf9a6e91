"""Resource commands built from the API's descriptors: `gatehouse <group> <command> [args]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import shtab
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from rich.live import Live

from cli import render
from cli.config import UsageError
from cli.descriptors import CLI_HELP, Command
from cli.loader import read_yaml_mapping
from cli.prompt import confirm
from gatehouse.client.defaults import ACCEPTED_METADATA

WATCH_SECONDS = 2.0
# Commands that print lines and answer with a cursor (access logs) are followed at this pace.
FOLLOW_SECONDS = 1.0
SCALAR_TYPES: dict[int, type] = {
    FieldDescriptor.TYPE_INT32: int,
    FieldDescriptor.TYPE_INT64: int,
    FieldDescriptor.TYPE_UINT32: int,
    FieldDescriptor.TYPE_UINT64: int,
    FieldDescriptor.TYPE_DOUBLE: float,
    FieldDescriptor.TYPE_FLOAT: float,
    FieldDescriptor.TYPE_STRING: str,
}
STRUCT = "google.protobuf.Struct"
# Filled from --project / the CLI config, never asked for.
IMPLICIT_FIELDS = ("project",)


def _help(field: FieldDescriptor) -> str | None:
    options = field.GetOptions()
    return options.Extensions[CLI_HELP] if options.HasExtension(CLI_HELP) else None


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _add_field(
    parser: argparse.ArgumentParser, field: FieldDescriptor, positional: bool, required: bool = False
) -> None:
    dest = f"field_{field.name}"
    help_text = _help(field)
    if positional:
        parser.add_argument(
            dest, metavar=field.name.upper(), help=help_text, type=SCALAR_TYPES.get(field.type, str)
        )
        return
    flag = "--" + field.name.replace("_", "-")
    repeated = field.is_repeated
    if field.message_type is not None and field.message_type.full_name == STRUCT:
        action = parser.add_argument(flag, dest=dest, metavar="FILE", help=help_text, required=required)
        action.complete = shtab.FILE  # type: ignore[attr-defined]
    elif _is_map(field):
        parser.add_argument(
            flag, dest=dest, action="append", metavar="KEY=VALUE", help=help_text, required=required
        )
    elif field.type == FieldDescriptor.TYPE_BOOL:
        parser.add_argument(flag, dest=dest, action="store_true", help=help_text)
    elif field.enum_type is not None:
        choices = [value.name for value in field.enum_type.values]
        parser.add_argument(flag, dest=dest, choices=choices, help=help_text, required=required)
    elif field.type in SCALAR_TYPES:
        kind = SCALAR_TYPES[field.type]
        metavar = field.name.upper()
        parser.add_argument(
            flag,
            dest=dest,
            type=kind,
            action="append" if repeated else "store",
            metavar=metavar,
            help=help_text,
            required=required,
        )


def _output_flags(parser: argparse.ArgumentParser, command: Command) -> None:
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    if command.option.verbose_columns:
        parser.add_argument("-v", "--verbose", action="store_true", help="more columns")
    if command.option.watchable:
        parser.add_argument(
            "-w", "--watch", "--follow", action="store_true", help="refresh until interrupted"
        )
    if command.option.confirm:
        parser.add_argument("-y", "--yes", action="store_true", help="answer yes")


def add_command(parser: argparse.ArgumentParser, command: Command) -> None:
    request = command.method.input_type
    positional = list(command.option.positional)
    required = set(command.option.required)
    unknown = [name for name in [*positional, *required] if name not in request.fields_by_name]
    if unknown:
        raise ValueError(f"{command.path}: {unknown} are not fields of {request.full_name}")
    for name in positional:
        _add_field(parser, request.fields_by_name[name], positional=True)
    for field in request.fields:
        if field.name not in positional and field.name not in IMPLICIT_FIELDS:
            _add_field(parser, field, positional=False, required=field.name in required)
    _output_flags(parser, command)
    parser.set_defaults(command=command)


def add_groups(
    subparsers: Any, commands: Iterable[Command], parser_class: type[argparse.ArgumentParser]
) -> None:
    groups: dict[str, list[Command]] = {}
    helps: dict[str, str] = {}
    for command in commands:
        groups.setdefault(command.group, []).append(command)
        helps[command.group] = helps.get(command.group) or command.group_help
    for group, members in sorted(groups.items()):
        group_parser = subparsers.add_parser(group, help=helps[group], description=helps[group])
        default = next((member for member in members if member.option.default), None)
        if default is not None:
            # `gatehouse gateway` alone runs the default command, with its flags.
            _output_flags(group_parser, default)
            group_parser.set_defaults(command=default)
        verbs = group_parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=parser_class)
        for member in members:
            add_command(
                verbs.add_parser(member.name, help=member.option.help, description=member.option.help), member
            )


def build_request(command: Command, args: argparse.Namespace, project: str) -> Message:
    request_type: Descriptor = command.method.input_type
    request = message_factory.GetMessageClass(request_type)()
    for field in request_type.fields:
        if field.name in IMPLICIT_FIELDS and field.name not in command.option.positional:
            setattr(request, field.name, project)
            continue
        value = getattr(args, f"field_{field.name}", None)
        if value is None or value is False:
            continue
        if field.message_type is not None and field.message_type.full_name == STRUCT:
            getattr(request, field.name).update(read_yaml_mapping(value))
        elif _is_map(field):
            for item in value:
                key, sep, val = item.partition("=")
                if not sep:
                    raise UsageError(f"--{field.name.replace('_', '-')} takes KEY=VALUE, not {item!r}")
                getattr(request, field.name)[key] = val
        elif field.is_repeated:
            getattr(request, field.name).extend(value)
        elif field.enum_type is not None:
            setattr(request, field.name, field.enum_type.values_by_name[value].number)
        else:
            setattr(request, field.name, value)
    return request


def _changes(command: Command, args: argparse.Namespace) -> list[str]:
    """The flags given to change something (not the positionals that name what to change)."""
    request: Descriptor = command.method.input_type
    given = []
    for field in request.fields:
        if field.name in command.option.positional or field.name in IMPLICIT_FIELDS:
            continue
        if getattr(args, f"field_{field.name}", None) not in (None, False, []):
            given.append(field.name)
    return given


def _change_flags(command: Command) -> str:
    request: Descriptor = command.method.input_type
    flags = [
        "--" + field.name.replace("_", "-")
        for field in request.fields
        if field.name not in command.option.positional and field.name not in IMPLICIT_FIELDS
    ]
    return " or ".join(flags)


def check_args(command: Command, args: argparse.Namespace) -> None:
    """What argparse cannot see: an `update` that changes nothing is a usage error, not a no-op."""
    if command.option.name == "update" and not _changes(command, args):
        raise UsageError(f"nothing to change: pass {_change_flags(command)}")


async def _call(channel: grpc.aio.Channel, command: Command, request: Message, progress: str = "") -> Message:
    """The RPC's answer. `progress` is printed once the server says it has accepted the request
    (initial metadata `gatehouse-accepted`), while the answer is still to come: never before a
    validation error. A unary call shows no headers before its answer, so such a call is read as a
    stream of its one answer, which is the same on the wire."""
    response_type = message_factory.GetMessageClass(command.method.output_type)
    serializer = lambda message: message.SerializeToString()  # noqa: E731
    if not progress:
        stub = channel.unary_unary(
            command.path, request_serializer=serializer, response_deserializer=response_type.FromString
        )
        return await stub(request)
    streamed = channel.unary_stream(
        command.path, request_serializer=serializer, response_deserializer=response_type.FromString
    )
    call = streamed(request)
    if ACCEPTED_METADATA in list(await call.initial_metadata() or ()):
        print(progress, file=sys.stderr, flush=True)
    answers = [answer async for answer in call]
    return answers[0]


def _columns(command: Command, verbose: bool) -> list[tuple[str, str]]:
    specs: Sequence[str] = list(command.option.columns)
    if verbose:
        specs = [*specs, *command.option.verbose_columns]
    return render.parse_columns(specs)


def _rows(command: Command, response: Message) -> list[Any]:
    return list(getattr(response, command.option.items)) if command.option.items else [response]


async def run(channel: grpc.aio.Channel, command: Command, args: argparse.Namespace, project: str) -> int:
    check_args(command, args)
    request = build_request(command, args, project)
    option = command.option
    if option.confirm and not await confirm(
        render.fill(option.confirm, request), getattr(args, "yes", False)
    ):
        return 0
    as_json = getattr(args, "json", False)
    response = await _call(channel, command, request, "" if as_json else option.progress)
    if as_json:
        render.print_json(response)
        return 0
    columns = _columns(command, getattr(args, "verbose", False))
    if getattr(args, "watch", False) and option.lines and "cursor" in response.DESCRIPTOR.fields_by_name:
        return await _follow(channel, command, request, response)
    if getattr(args, "watch", False) and option.lines:
        return await _watch_lines(channel, command, request, response)
    if getattr(args, "watch", False):
        return await _watch(channel, command, request, columns)
    if option.lines:
        for line in render.lines(response, option.lines):
            print(line)
    elif columns:
        render.print_table(columns, _rows(command, response))
    if option.done:
        render.console.print(render.fill(option.done, response, request))
    return 0


async def _follow(channel: grpc.aio.Channel, command: Command, request: Message, response: Message) -> int:
    """Print the answer's lines, then each new answer's, asking only for what follows its cursor."""
    try:
        while True:
            for line in render.lines(response, command.option.lines):
                print(line, flush=True)
            request.after = response.cursor  # type: ignore[attr-defined]
            await asyncio.sleep(FOLLOW_SECONDS)
            response = await _call(channel, command, request)
    except asyncio.CancelledError:
        return 0


async def _watch_lines(
    channel: grpc.aio.Channel, command: Command, request: Message, response: Message
) -> int:
    """Show the answer's lines, replaced by each new answer's."""

    def text(answer: Message) -> str:
        return "\n".join(render.lines(answer, command.option.lines))

    with Live(text(response), console=render.console, auto_refresh=False) as live:
        try:
            while True:
                await asyncio.sleep(WATCH_SECONDS)
                live.update(text(await _call(channel, command, request)), refresh=True)
        except asyncio.CancelledError:
            return 0


async def _watch(
    channel: grpc.aio.Channel, command: Command, request: Message, columns: list[tuple[str, str]]
) -> int:
    response = await _call(channel, command, request)
    with Live(
        render.table(columns, _rows(command, response)), console=render.console, auto_refresh=False
    ) as live:
        try:
            while True:
                await asyncio.sleep(WATCH_SECONDS)
                response = await _call(channel, command, request)
                live.update(render.table(columns, _rows(command, response)), refresh=True)
        except asyncio.CancelledError:
            return 0

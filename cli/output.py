"""Tables `apply` shows, with the columns the List RPCs declare, and error lines."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cli import render
from cli.descriptors import CLI
from gatehouse.v1 import registry_pb2, resources_pb2

console = render.console


def _list_columns(service: str) -> list[tuple[str, str]]:
    method = registry_pb2.DESCRIPTOR.services_by_name[service].methods_by_name["List"]
    return render.parse_columns(method.GetOptions().Extensions[CLI].columns)


def gateways_table(gateways: Sequence[resources_pb2.Gateway]) -> None:
    render.print_table(_list_columns("Gateways"), gateways)


def services_table(services: Sequence[resources_pb2.Service]) -> None:
    render.print_table(_list_columns("Services"), services)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)

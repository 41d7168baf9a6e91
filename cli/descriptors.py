"""The commands the API offers: every RPC with a `(gatehouse.v1.cli)` option, found in the
compiled proto descriptors. Adding such an RPC adds its command; the CLI has no per-RPC code."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from google.protobuf.descriptor import FileDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import FieldOptions, MethodOptions, ServiceOptions

import gatehouse.v1
from gatehouse.v1 import cli_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

# protoc's stubs type the options' extensions as plain fields; these say what each extends and holds.
CLI_GROUP = cast("_ExtensionFieldDescriptor[ServiceOptions, cli_pb2.CliGroup]", cli_pb2.cli_group)
CLI = cast("_ExtensionFieldDescriptor[MethodOptions, cli_pb2.CliCommand]", cli_pb2.cli)
CLI_HELP = cast("_ExtensionFieldDescriptor[FieldOptions, str]", cli_pb2.cli_help)


@dataclass(frozen=True)
class Command:
    group: str
    group_help: str
    option: cli_pb2.CliCommand
    method: MethodDescriptor

    @property
    def name(self) -> str:
        return self.option.name

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"


def api_files() -> list[FileDescriptor]:
    """Every compiled proto module of the API package."""
    files = []
    for module in pkgutil.iter_modules(gatehouse.v1.__path__):
        if module.name.endswith("_pb2"):
            files.append(importlib.import_module(f"gatehouse.v1.{module.name}").DESCRIPTOR)
    return files


def _group(service: ServiceDescriptor) -> cli_pb2.CliGroup | None:
    options = service.GetOptions()
    if not options.HasExtension(CLI_GROUP):
        return None
    return options.Extensions[CLI_GROUP]


def commands(files: Iterable[FileDescriptor]) -> Iterator[Command]:
    for file in files:
        for service in file.services_by_name.values():
            group = _group(service)
            if group is None:
                continue
            for method in service.methods:
                options = method.GetOptions()
                if method.client_streaming or method.server_streaming or not options.HasExtension(CLI):
                    continue
                yield Command(group.name, group.help, options.Extensions[CLI], method)

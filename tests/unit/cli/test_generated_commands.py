"""A new RPC with a `cli` option becomes a command, with no CLI code: compile a proto here, build
the parser from its descriptor, and run the command against a server that implements it."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import grpc_tools
import pytest
from grpc_tools import protoc

from cli import generated
from cli.descriptors import api_files, commands
from cli.main import build_parser

PROTOS = Path(__file__).resolve().parents[3] / "protos"

WIDGETS_PROTO = """
syntax = "proto3";
package gatehouse.v1.testing;
import "gatehouse/v1/cli.proto";

service Widgets {
  option (gatehouse.v1.cli_group) = {name: "widget", help: "widgets for a test"};
  rpc Spin(SpinRequest) returns (SpinResponse) {
    option (gatehouse.v1.cli) = {
      name: "spin" help: "spin a widget" positional: "name"
      items: "spins" columns: "NAME={name}" columns: "TURNS={turns}" columns: "FAST={fast|check}"
      done: "Spun {name}."
    };
  }
  rpc Internal(SpinRequest) returns (SpinResponse);
}

message SpinRequest {
  string project = 1;
  string name = 2;
  int32 turns = 3 [(gatehouse.v1.cli_help) = "how many turns"];
  bool fast = 4;
  map<string, string> labels = 5;
}

message Spin {
  string name = 1;
  int32 turns = 2;
  bool fast = 3;
  string project = 4;
}

message SpinResponse {
  repeated Spin spins = 1;
}
"""


@pytest.fixture(scope="module")
def widgets(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    root = tmp_path_factory.mktemp("proto")
    package = root / "widgets_test"
    package.mkdir()
    (package / "widgets.proto").write_text(textwrap.dedent(WIDGETS_PROTO))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{root}",
        f"-I{include}",
        f"--python_out={root}",
        "widgets_test/widgets.proto",
    ]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("widgets_test.widgets_pb2")
    finally:
        sys.path.remove(str(root))


def test_a_new_rpc_is_a_new_command(widgets: ModuleType) -> None:
    parser = build_parser([*api_files(), widgets.DESCRIPTOR])
    args = parser.parse_args(["widget", "spin", "w1", "--turns", "3", "--fast", "--labels", "a=b"])
    assert args.command.path == "/gatehouse.v1.testing.Widgets/Spin"
    # The widgets' messages are compiled as the test runs: no stubs describe them.
    request: Any = generated.build_request(args.command, args, project="main")
    assert (request.project, request.name, request.turns, request.fast) == ("main", "w1", 3, True)
    assert dict(request.labels) == {"a": "b"}
    names = {command.name for command in commands([widgets.DESCRIPTOR])}
    assert names == {"spin"}  # an RPC without the option stays off the command line


@pytest.fixture
async def widget_server(widgets: ModuleType) -> AsyncIterator[str]:
    async def spin(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> object:
        spin_type = widgets.Spin
        response = widgets.SpinResponse(
            spins=[
                spin_type(name=request.name, turns=request.turns, fast=request.fast, project=request.project)
            ]
        )
        return response

    handler = grpc.method_handlers_generic_handler(
        "gatehouse.v1.testing.Widgets",
        {
            "Spin": grpc.unary_unary_rpc_method_handler(
                spin,
                request_deserializer=widgets.SpinRequest.FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_the_new_command_runs_against_a_server(
    widgets: ModuleType, widget_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser([*api_files(), widgets.DESCRIPTOR])
    args = parser.parse_args(["widget", "spin", "w2", "--turns", "7"])
    async with grpc.aio.insecure_channel(widget_server) as channel:
        assert await generated.run(channel, args.command, args, project="main") == 0
        out = capsys.readouterr().out
        assert out.split() == ["NAME", "TURNS", "FAST", "w2", "7", "Spun", "w2."]
        args = parser.parse_args(["widget", "spin", "w3", "--json"])
        assert await generated.run(channel, args.command, args, project="main") == 0
        assert '"name": "w3"' in capsys.readouterr().out

"""A listener Envoy cannot bind fails only its service, with Envoy's reason (on `apply`, `service get`,
`service list -v` and `gateway list -v`), and holds up no other service's apply on the gateway.
Through the CLI, against a real server and its real Envoy."""

from __future__ import annotations

import json
import socket
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateways import gateway_host
from tests.support.http import wait_for_status
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real

GATEWAY = "refusing-gw"
IN_USE = "Address already in use"
# Well under the harness's GATEHOUSE_APPLY_TIMEOUT: `apply` answers, it does not wait to give up.
PROMPT_SECONDS = 60


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _service_file(directory: Path, name: str, port: int) -> Path:
    return _write(
        directory,
        f"{name}.dstack.yml",
        f"""
        type: service
        name: {name}
        gateway: {GATEWAY}
        port: "{port}:8000"
        auth: false
        commands:
          - python -m http.server 8000
        """,
    )


@pytest.fixture(scope="module")
def address(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    config = _write(
        tmp_path_factory.mktemp("gateway"),
        "gateway.dstack.yml",
        f"type: gateway\nname: {GATEWAY}\nbackend: local\nregion: local\n",
    )
    result = server.cli("apply", "-f", str(config), "-y")
    assert result.code == 0, result.stderr + server.log()[-3000:]
    return gateway_host(server, GATEWAY)


@pytest.fixture
def holder(address: str) -> Iterator[socket.socket]:
    """Another program listening on the gateway's address, on a port of its own choosing."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind((address, 0))
    held.listen()
    try:
        yield held
    finally:
        held.close()


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def test_a_port_held_by_another_program_fails_only_its_service(
    server: ServerProcess, address: str, holder: socket.socket, tmp_path: Path
) -> None:
    held_port = int(holder.getsockname()[1])
    blocked = _service_file(tmp_path, "blocked", held_port)
    started = time.monotonic()
    result = server.cli("apply", "-f", str(blocked), "-y")
    assert time.monotonic() - started < PROMPT_SECONDS, result.stderr
    assert result.code == 1, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f'service "blocked" failed: gateway "{GATEWAY}" refused listener port-{held_port}: ' in line
    assert f"cannot bind '{address}:{held_port}': {IN_USE}" in line
    assert "available" not in result.stdout

    shown = json.loads(server.cli("service", "get", "blocked", "--json").stdout)
    assert shown["status"]["state"] == "SERVICE_STATE_FAILED"
    assert f"refused listener port-{held_port}: cannot bind" in shown["status"]["message"]
    assert IN_USE in server.cli("service", "list", "-v").stdout  # the ERROR column
    gateways = server.cli("gateway", "list", "-v")
    assert f"config rejected: Error adding/updating listener(s) port-{held_port}" in gateways.stdout
    assert IN_USE in gateways.stdout

    # Another service on the same gateway: applied at once, and it answers.
    other_port = _free_port(address)
    other = _service_file(tmp_path, "bystander", other_port)
    started = time.monotonic()
    applied = server.cli("apply", "-f", str(other), "-y")
    assert applied.code == 0, applied.stderr + server.log()[-3000:]
    assert time.monotonic() - started < PROMPT_SECONDS
    assert f"available at http://{address}:{other_port}" in applied.stdout
    assert wait_for_status(f"http://{address}:{other_port}/", 200, within=5)[0] == 200
    # The refusal is still there, on the service and on the gateway.
    assert IN_USE in json.loads(server.cli("service", "get", "blocked", "--json").stdout)["status"]["message"]
    assert IN_USE in server.cli("gateway", "list", "-v").stdout

    # The other program lets the port go; the service is applied again and comes up.
    holder.close()
    assert server.cli("delete", "-f", str(blocked), "-y").code == 0
    fixed = server.cli("apply", "-f", str(blocked), "-y")
    assert fixed.code == 0, fixed.stderr + server.log()[-3000:]
    assert wait_for_status(f"http://{address}:{held_port}/", 200, within=5)[0] == 200
    assert IN_USE not in server.cli("gateway", "list", "-v").stdout
    shown = json.loads(server.cli("service", "get", "blocked", "--json").stdout)
    assert shown["status"]["state"] == "SERVICE_STATE_RUNNING"
    for config in (blocked, other):
        assert server.cli("delete", "-f", str(config), "-y").code == 0

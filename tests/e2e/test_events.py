"""`gatehouse events`: each write names who made it, the provisioner's steps are there, an Envoy's
NACK appears with Envoy's reason (and in the gateway's ERROR column), and a project's events are
its members' only. Against a real server, its real Envoy, two projects with same-named gateways."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real

IN_USE = "Address already in use"


def _apply(
    server: ServerProcess, path: Path, text: str, *args: str, env: dict[str, str] | None = None
) -> int:
    path.write_text(text)
    return server.cli("apply", "-f", str(path), "-y", *args, env=env).code


def _events(server: ServerProcess, *args: str, env: dict[str, str] | None = None) -> list[dict[str, str]]:
    done = server.cli("events", "list", "--json", *args, env=env)
    assert done.code == 0, done.stderr
    events: list[dict[str, str]] = json.loads(done.stdout).get("events", [])
    return events


def test_writes_steps_and_a_nack_are_events_of_their_project(server: ServerProcess, tmp_path: Path) -> None:
    gateway = "type: gateway\nname: ev-gw\nbackend: local\nregion: local\n"
    assert _apply(server, tmp_path / "gw.dstack.yml", gateway) == 0
    dave = {"GATEHOUSE_TOKEN": server.cli("user", "create", "dave-ev").stdout.split()[-1]}
    assert server.cli("project", "create", "dave-ev", env=dave).code == 0
    assert _apply(server, tmp_path / "dgw.dstack.yml", gateway, "--project", "dave-ev", env=dave) == 0

    mine = _events(server, "--gateway", "ev-gw")
    applied = [e for e in mine if e["reason"] == "Applied"]
    assert applied and applied[-1]["principal"] == "user:admin" and applied[-1]["kind"] == "gateway"
    assert any(e["reason"] == "Running" and e["principal"] == "gatehouse" for e in mine), mine
    assert {e["project"] for e in mine} == {"main"}
    daves = _events(server, "--gateway", "ev-gw", "--project", "dave-ev", env=dave)
    assert {(e["project"], e["principal"]) for e in daves if e["reason"] == "Applied"} == {
        ("dave-ev", "user:dave-ev")
    }

    # Another program holds a port on the gateway's address: Envoy refuses the listener (a NACK).
    address = gateway_host(server, "ev-gw")
    with socket.socket() as held:
        held.bind((address, 0))
        held.listen()
        port = held.getsockname()[1]
        service = (
            f'type: service\nname: ev-blocked\ngateway: ev-gw\nport: "{port}:{free_port()}"\nauth: false\n'
        )
        service += 'commands: ["python -m http.server $PORT"]\n'
        (tmp_path / "svc.dstack.yml").write_text(service)
        server.cli("apply", "-f", str(tmp_path / "svc.dstack.yml"), "-y")
        refused = [e for e in _events(server, "--gateway", "ev-gw") if e["reason"] == "EnvoyRejected"]
        assert refused and refused[0]["type"] == "Warning", _events(server, "--gateway", "ev-gw")
        assert IN_USE in refused[0]["message"] and f"port-{port}" in refused[0]["message"]
        assert IN_USE in server.cli("gateway", "list", "-v").stdout  # the ERROR column
        # The service's own events: applied by the admin, then the provisioner's steps.
        steps = [(e["reason"], e["principal"]) for e in _events(server, "--service", "ev-blocked")]
        assert steps[-1] == ("Applied", "user:admin") and ("Provisioning", "gatehouse") in steps
        assert server.cli("delete", "-f", str(tmp_path / "svc.dstack.yml"), "-y").code == 0

    # Dave's project saw none of it; he cannot read project main's events, nor by name.
    assert not [e for e in _events(server, "--project", "dave-ev", env=dave) if e["kind"] == "service"]
    denied = server.cli("events", "list", "--project", "main", env=dave)
    assert denied.code == 1 and "not a member" in denied.stderr
    assert "Traceback" not in denied.stderr


def test_events_table_and_a_bounded_limit(server: ServerProcess) -> None:
    table = server.cli("events", "list")
    assert table.code == 0 and table.stdout.split()[:4] == ["TIME", "KIND", "NAME", "TYPE"]
    assert len(_events(server, "--limit", "2")) <= 2
    assert len(_events(server, "--limit", "100000")) <= 500

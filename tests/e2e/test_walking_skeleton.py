"""The walking skeleton as a user runs it: `gatehouse server`, a local gateway with a real Envoy,
the seed-004 service as real replica processes, reached through Envoy."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.http import fetch, wait_for_status
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("configs")


@pytest.fixture(scope="module")
def gateway(server: ServerProcess, workdir: Path) -> Path:
    config = _write(
        workdir,
        "local-gateway.dstack.yml",
        """
        type: gateway
        name: local-gw
        backend: local
        region: local
        """,
    )
    result = server.cli("apply", "-f", str(config), "-y")
    assert result.code == 0, result.stderr + server.log()
    assert "BACKEND" in result.stdout and "REGION" in result.stdout and "DEFAULT" in result.stdout
    assert "local-gw" in result.stdout and "running" in result.stdout
    # A loopback address of its own, not the control plane's.
    assert gateway_host(server, "local-gw") in result.stdout
    assert gateway_host(server, "local-gw") != "127.0.0.1"
    return config


@pytest.fixture(scope="module")
def host(server: ServerProcess, gateway: Path) -> str:
    return gateway_host(server, "local-gw")


def test_seed_004_service_is_reachable_through_envoy(server: ServerProcess, workdir: Path, host: str) -> None:
    # The seed's own ports: 5001 on the gateway's address, 8000 in the replica's own network.
    gateway_port, app_port = (5001 if _port_free(host, 5001) else free_port()), 8000
    config = _write(
        workdir,
        "service.dstack.yml",
        f"""
        type: service
        gateway: {host}
        port: "{gateway_port}:{app_port}"
        commands:
          - python -m http.server {app_port}
        """,
    )
    result = server.cli("apply", "-f", str(config), "-y")
    assert result.code == 0, result.stderr + server.log()
    assert f"http://{host}:{gateway_port}" in result.stdout
    # The command returns once the service is reachable: no waiting needed here.
    denied, reason = fetch(f"http://{host}:{gateway_port}/")
    assert denied == 401 and "unauthorized" in reason  # auth: true is the default: a token opens it
    status, body = fetch(f"http://{host}:{gateway_port}/", token=server.token)
    assert status == 200, body
    assert "Directory listing" in body
    listed = server.cli("service", "list")
    assert listed.code == 0
    assert "local-gw" in listed.stdout and "1/1" in listed.stdout and "running" in listed.stdout
    logs = server.cli("service", "logs", _service_name(server, gateway_port))
    assert logs.code == 0 and "GET / HTTP/1.1" in logs.stdout
    assert server.cli("delete", "-f", str(config), "-y").code == 0
    assert wait_for_status(f"http://{host}:{gateway_port}/", 0, token=server.token)[0] == 0


def _service_name(server: ServerProcess, gateway_port: int) -> str:
    listed = server.cli("service", "list", "--json")
    import json

    for service in json.loads(listed.stdout).get("services", []):
        if service["spec"].get("gateway_port") == gateway_port:
            return str(service["name"])
    raise AssertionError(f"no service on port {gateway_port}: {listed.stdout}")


def test_a_single_port_maps_gateway_port_80(server: ServerProcess, workdir: Path, host: str) -> None:
    app_port = free_port()
    config = _write(
        workdir,
        "web.dstack.yml",
        f"""
        type: service
        name: web
        gateway: local-gw
        port: {app_port}
        commands:
          - python -m http.server {app_port}
        """,
    )
    result = server.cli("apply", "-f", str(config), "-y")
    assert result.code == 0, result.stderr
    # The local backend stands in GATEHOUSE_LOCAL_HTTP_PORT for the gateway's :80, and says so.
    url = f"http://{host}" if server.http_port == 80 else f"http://{host}:{server.http_port}"
    assert f"The service is available at {url}\n" in result.stdout
    assert fetch(f"http://{host}:{server.http_port}/", token=server.token)[0] == 200
    assert server.cli("delete", "-f", str(config), "-y").code == 0
    assert wait_for_status(f"http://{host}:{server.http_port}/", 404, token=server.token)[0] == 404


def test_the_same_gateway_port_is_refused_until_freed(
    server: ServerProcess, workdir: Path, host: str
) -> None:
    gateway_port, first_app, second_app = free_port(), free_port(), free_port()
    first = _write(
        workdir,
        "first.dstack.yml",
        f"""
        type: service
        name: first
        gateway: local-gw
        port: "{gateway_port}:{first_app}"
        commands: ["python -m http.server {first_app}"]
        """,
    )
    second = _write(
        workdir,
        "second.dstack.yml",
        f"""
        type: service
        name: second
        gateway: local-gw
        port: "{gateway_port}:{second_app}"
        commands: ["python -m http.server {second_app}"]
        """,
    )
    assert server.cli("apply", "-f", str(first), "-y").code == 0
    refused = server.cli("apply", "-f", str(second), "-y")
    assert refused.code == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert '"first"' in lines[0] and str(gateway_port) in lines[0]
    assert "another gateway port" in lines[0] and "domain" in lines[0]
    assert "Traceback" not in refused.stderr
    assert server.cli("delete", "-f", str(first), "-y").code == 0
    accepted = server.cli("apply", "-f", str(second), "-y")
    assert accepted.code == 0, accepted.stderr
    assert fetch(f"http://{host}:{gateway_port}/", token=server.token)[0] == 200
    assert server.cli("delete", "-f", str(second), "-y").code == 0


def test_envoy_and_replicas_outlive_the_server_and_are_adopted(
    server: ServerProcess, workdir: Path, host: str
) -> None:
    gateway_port, app_port = free_port(), free_port()
    config = _write(
        workdir,
        "durable.dstack.yml",
        f"""
        type: service
        name: durable
        gateway: local-gw
        port: "{gateway_port}:{app_port}"
        auth: false
        commands: ["python -m http.server {app_port}"]
        """,
    )
    assert server.cli("apply", "-f", str(config), "-y").code == 0
    pids_before = {path: path.read_text() for path in server.home.glob("**/*.pid")}
    server.stop()
    # The control plane is down; Envoy keeps serving its last configuration.
    assert fetch(f"http://{host}:{gateway_port}/", token=server.token)[0] == 200
    server.start()
    again = server.cli("apply", "-f", str(config), "-y")
    assert again.code == 0, again.stderr
    assert "No configuration changes" in again.stdout
    assert {path: path.read_text() for path in server.home.glob("**/*.pid")} == pids_before
    assert fetch(f"http://{host}:{gateway_port}/", token=server.token)[0] == 200
    assert server.cli("delete", "-f", str(config), "-y").code == 0


def test_lists(server: ServerProcess, gateway: Path) -> None:
    listed = server.cli("gateway", "list")
    assert listed.code == 0
    header = listed.stdout.splitlines()[0].split()
    assert header == ["BACKEND", "REGION", "NAME", "HOSTNAME", "DOMAIN", "DEFAULT", "STATUS"]
    assert "✓" in listed.stdout
    assert server.cli("service", "list").code == 0


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("bad-backend.dstack.yml", "type: gateway\nname: gw-x\nbackend: mars\nregion: r\n", "not a backend"),
        ("bad-port.dstack.yml", 'type: service\nname: p\nport: "80:80:80"\n', "is not a port"),
        ("bad-yaml.dstack.yml", "type: service\nport: [1,\n", "bad-yaml.dstack.yml:"),
        (
            "unknown-field.dstack.yml",
            "type: gateway\nname: gw-y\nbackend: local\nregion: local\nregoin: x\n",
            "regoin",
        ),
        ("service.yml", "type: service\nport: 80\n", "must end with .dstack.yml"),
    ],
)
def test_bad_input_gives_one_clear_line(
    server: ServerProcess, workdir: Path, name: str, text: str, expected: str
) -> None:
    path = _write(workdir, name, text)
    result = server.cli("apply", "-f", str(path), "-y")
    assert result.code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_missing_file(server: ServerProcess, workdir: Path) -> None:
    result = server.cli("apply", "-f", str(workdir / "nope.dstack.yml"), "-y")
    assert result.code == 2
    assert result.stderr.strip() == f"error: {workdir / 'nope.dstack.yml'}: no such file"


def test_secrets_in_env_reach_the_replica_but_never_the_spec(
    server: ServerProcess, workdir: Path, host: str
) -> None:
    assert server.cli("secrets", "add", "API_KEY", "s3cr3t-value").code == 0
    gateway_port, app_port = free_port(), free_port()
    config = _write(
        workdir,
        "secretive.dstack.yml",
        f"""
        type: service
        name: secretive
        gateway: local-gw
        port: "{gateway_port}:{app_port}"
        env:
          API_KEY: ${{{{ secrets.API_KEY }}}}
        commands:
          - printf %s "$API_KEY" > key.txt
          - python -m http.server {app_port}
        """,
    )
    result = server.cli("apply", "-f", str(config), "-y")
    assert result.code == 0, result.stderr + server.log()
    assert fetch(f"http://{host}:{gateway_port}/key.txt", token=server.token) == (200, "s3cr3t-value")
    shown = server.cli("service", "get", "secretive", "--json")
    assert "s3cr3t-value" not in shown.stdout and "${{ secrets.API_KEY }}" in shown.stdout
    assert server.cli("delete", "-f", str(config), "-y").code == 0
    assert server.cli("secrets", "delete", "API_KEY", "-y").code == 0


def test_deleting_a_gateway_in_use_needs_force(server: ServerProcess, workdir: Path, gateway: Path) -> None:
    app_port = free_port()
    config = _write(
        workdir,
        "last.dstack.yml",
        f"""
        type: service
        name: last
        gateway: local-gw
        port: "{free_port()}:{app_port}"
        commands: ["python -m http.server {app_port}"]
        """,
    )
    assert server.cli("apply", "-f", str(config), "-y").code == 0
    refused = server.cli("delete", "-f", str(gateway), "-y")
    assert refused.code == 1 and "last" in refused.stderr and "--force" in refused.stderr
    deleted = server.cli("delete", "-f", str(gateway), "-y", "--force")
    assert deleted.code == 0, deleted.stderr
    assert not list(server.home.glob("gateways/*/envoy.pid"))
    assert server.cli("gateway", "list").stdout.count("\n") == 1

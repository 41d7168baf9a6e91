"""The seeds' commands as printed (`dstack` spelled `gatehouse`), against a real server: seed 000's
gateway apply, list and delete; seed 004's `gateway create --project`, `secrets add … --project`,
`run . -f … --project` and the service at `http://<gateway>:5001`, called as the CLI says to."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.http import wait_for_status
from tests.support.server import GATEHOUSE, CliResult, ServerProcess

pytestmark = pytest.mark.real


def _write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(textwrap.dedent(text).lstrip())


def _one_table_row(result: CliResult, header: list[str]) -> list[str]:
    lines = result.stdout.splitlines()
    start = next(index for index, line in enumerate(lines) if line.split() == header)
    return lines[start + 1].split()


def test_seed_000_gateways(server: ServerProcess, tmp_path: Path) -> None:
    _write(
        tmp_path,
        "gateway.dstack.yml",
        """
        type: gateway
        # A name of the gateway
        name: example-gateway
        # Gateways are bound to a specific backend and region
        backend: local
        region: local
        # This domain will be used to access the endpoint
        domain: example.com
        """,
    )
    applied = server.cli("apply", "-f", "gateway.dstack.yml", stdin="y\n", cwd=tmp_path)
    assert applied.code == 0, applied.stderr
    assert "The example-gateway doesn't exist. Create it? [y/n]: " in applied.stdout
    assert "Provisioning...\n" in applied.stdout
    header = ["BACKEND", "REGION", "NAME", "HOSTNAME", "DOMAIN", "DEFAULT", "STATUS"]
    host = gateway_host(server, "example-gateway")
    row = _one_table_row(applied, header)
    assert row == ["local", "local", "example-gateway", host, "example.com", "✓", "running"]
    assert (
        f"Add a DNS record: *.example.com A {host} (services will be at https://<run-name>.example.com)"
        in applied.stdout
    )
    assert "example-gateway" in server.cli("gateway", "list").stdout

    # `certificate: null`: services use HTTP, and the advice says so.
    _write(
        tmp_path,
        "plain.dstack.yml",
        """
        type: gateway
        name: plain-gateway
        backend: local
        region: local
        domain: example.org
        certificate: null
        """,
    )
    plain = server.cli("apply", "-f", "plain.dstack.yml", "-y", cwd=tmp_path)
    assert plain.code == 0, plain.stderr
    assert "(services will be at http://<run-name>.example.org)" in plain.stdout

    # "To delete a gateway, pass the gateway configuration to dstack delete" ...
    deleted = server.cli("delete", "-f", "gateway.dstack.yml", stdin="y\n", cwd=tmp_path)
    assert deleted.code == 0 and "Deleted the gateway example-gateway." in deleted.stdout
    # ... "Alternatively, you can delete a gateway by passing the gateway name to dstack gateway delete."
    assert server.cli("gateway", "delete", "plain-gateway", stdin="y\n").code == 0
    assert "gateway" not in server.cli("gateway", "list").stdout.split("\n", 1)[1]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def test_seed_004_services(server: ServerProcess, tmp_path: Path) -> None:
    assert server.cli("project", "create", "local").code == 0
    # $ dstack gateway create --project local
    created = server.cli("gateway", "create", "--project", "local")
    assert created.code == 0, created.stderr + server.log()
    assert created.stderr == "Creating gateway, it may take some time...\n"
    name, address = _one_table_row(created, ["NAME", "ADDRESS"])
    assert name.startswith("gatehouse-gateway-") and address.startswith("127.")
    assert name in server.cli("gateway", "list", "--project", "local").stdout

    # $ dstack secrets add GATEWAY_IP 23.100.30.60 --project local
    added = server.cli("secrets", "add", "GATEWAY_IP", address, "--project", "local")
    assert added.code == 0 and added.stdout == "Added the secret GATEWAY_IP to project local.\n"

    # The default service port is 80, the gateway's address written in the file.
    app_port = free_port()
    _write(
        tmp_path,
        "service.dstack.yml",
        f"""
        type: service
        gateway: {address}
        port: {app_port}
        commands:
          - python -m http.server {app_port}
        """,
    )
    # $ dstack run . -f service.dstack.yml --project local
    ran = server.cli("run", ".", "-f", "service.dstack.yml", "--project", "local", stdin="y\n", cwd=tmp_path)
    assert ran.code == 0, ran.stderr + server.log()
    assert "Create a new service? [y/n]: " in ran.stdout
    url = f"http://{address}" if server.http_port == 80 else f"http://{address}:{server.http_port}"
    assert f"The service is available at {url}\n" in ran.stdout
    assert (
        server.cli("delete", "-f", "service.dstack.yml", "--project", "local", "-y", cwd=tmp_path).code == 0
    )

    # `gateway: ${{ secrets.GATEWAY_IP }}` and `port: "5001:8000"`.
    gateway_port = 5001 if _port_free(address, 5001) else free_port()
    _write(
        tmp_path,
        "service.dstack.yml",
        f"""
        type: service
        gateway: ${{{{ secrets.GATEWAY_IP }}}}
        port: "{gateway_port}:{app_port}"
        commands:
          - python -m http.server {app_port}
        """,
    )
    ran = server.cli("run", ".", "-f", "service.dstack.yml", "--project", "local", stdin="y\n", cwd=tmp_path)
    assert ran.code == 0, ran.stderr + server.log()
    url = f"http://{address}:{gateway_port}"
    # "The service will be accessible at `http://23.100.30.60:5001`."
    assert f"The service is available at {url}\n" in ran.stdout
    lines = ran.stdout.splitlines()
    hint = lines.index("Auth is on, so call it with a token:")
    command = lines[hint + 1].strip()
    assert command == f'curl -H "Authorization: Bearer $(gatehouse token)" {url}'
    # The hint as printed, in a shell with `gatehouse` on its PATH.
    shell_env = {**server.env, "PATH": f"{Path(GATEHOUSE).parent}:{os.environ['PATH']}"}
    called = subprocess.run(
        ["bash", "-c", command.replace("curl ", "curl -s -o /dev/null -w %{http_code} ", 1)],
        env=shell_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert called.stdout == "200", called.stderr
    assert wait_for_status(url + "/", 401)[0] == 401  # and without the token, what the hint is for

    services = json.loads(server.cli("service", "list", "--project", "local", "--json").stdout)["services"]
    assert [service["spec"]["gateway"] for service in services] == [address]
    assert (
        server.cli("delete", "-f", "service.dstack.yml", "--project", "local", "-y", cwd=tmp_path).code == 0
    )
    assert server.cli("gateway", "delete", name, "--project", "local", "-y").code == 0

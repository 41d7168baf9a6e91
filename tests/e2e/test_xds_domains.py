"""Domain mode as a user runs it: a local gateway with a domain, a service at `<name>.<domain>` reached
through the local Envoy (configured over Delta xDS) as soon as `apply` returns, and gone after delete."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real

DOMAIN = "apps.test"


def _get(port: int, host: str, address: str) -> tuple[int, str]:
    return fetch(f"http://{address}:{port}/", host=host)


def _eventually(port: int, host: str, address: str, status: int, within: float = 30.0) -> tuple[int, str]:
    deadline = time.monotonic() + within
    last = _get(port, host, address)
    while last[0] != status and time.monotonic() < deadline:
        time.sleep(0.05)
        last = _get(port, host, address)
    return last


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_a_domain_service_is_live_when_apply_returns_and_gone_after_delete(
    server: ServerProcess, tmp_path: Path
) -> None:
    gateway = _write(
        tmp_path,
        "domain-gateway.dstack.yml",
        f"""
        type: gateway
        name: domain-gw
        backend: local
        region: local
        domain: {DOMAIN}
        certificate: null
        """,
    )
    applied = server.cli("apply", "-f", str(gateway), "-y")
    assert applied.code == 0, applied.stderr + server.log()
    host, address = f"hello.{DOMAIN}", gateway_host(server, "domain-gw")
    assert _eventually(server.http_port, host, address, 404)[0] == 404
    app_port = free_port()
    service = _write(
        tmp_path,
        "hello.dstack.yml",
        f"""
        type: service
        name: hello
        gateway: domain-gw
        port: {app_port}
        https: false
        auth: false
        commands:
          - python -m http.server {app_port}
        """,
    )
    result = server.cli("apply", "-f", str(service), "-y")
    assert result.code == 0, result.stderr + server.log()
    assert f"http://{host}" in result.stdout
    # `apply` returned once every Envoy of the gateway acknowledged the routes: no waiting here.
    status, body = _get(server.http_port, host, address)
    assert status == 200 and "Directory listing" in body, body
    assert _get(server.http_port, f"other.{DOMAIN}", address)[0] == 404
    assert server.cli("delete", "-f", str(service), "-y").code == 0
    assert _eventually(server.http_port, host, address, 404)[0] == 404
    assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0

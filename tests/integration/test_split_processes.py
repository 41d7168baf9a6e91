"""The skeleton scenario with registry, provisioner, certificates and xDS as four processes on
PostgreSQL: the way docker-compose runs them."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from gateway_xds.server.server import ADS_SERVICE
from services.common.crypto import Cipher, configured_key
from services.common.internal_ca import XDS_SERVER_NAME, InternalCA, gateway_channel_credentials
from services.common.probes import free_port
from services.provisioner.hosts.identity import JOIN_PATH
from tests.support.databases import database_url
from tests.support.http import fetch
from tests.support.server import GATEHOUSE

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
async def split(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("split-home")
    async with database_url("postgresql", home) as url:
        registry_port, xds_port, join_port = free_port(), free_port(), free_port()
        provisioner_port, certificates_port, xds_health_port = free_port(), free_port(), free_port()
        env = dict(os.environ)
        env.update(
            GATEHOUSE_HOME=str(home),
            GATEHOUSE_DB_URL=url,
            GATEHOUSE_REGISTRY=f"127.0.0.1:{registry_port}",
            GATEHOUSE_XDS_PORT=str(xds_port),
            GATEHOUSE_JOIN_PORT=str(join_port),
            GATEHOUSE_XDS_HEALTH_PORT=str(xds_health_port),
            GATEHOUSE_METRICS_PORT="0",
            GATEHOUSE_LOCAL_HTTP_PORT=str(free_port()),
            GATEHOUSE_LOCAL_HTTPS_PORT=str(free_port()),
            GATEHOUSE_LOCAL_ENVOY_CONCURRENCY="1",
            GATEHOUSE_SYSTEM_TOKEN="gh_split-test-system-token",
            GATEHOUSE_SERVER=f"127.0.0.1:{registry_port}",
            GATEHOUSE_APPLY_TIMEOUT="60",
        )
        commands = [
            ["registry", "--port", str(registry_port)],
            ["xds"],
            ["provisioner", "--port", str(provisioner_port)],
            ["certificates", "--port", str(certificates_port)],
        ]
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for args in commands:
                with open(home / f"{args[0]}.log", "wb") as log:  # noqa: ASYNC230
                    processes.append(
                        subprocess.Popen([GATEHOUSE, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
                    )
                if args[0] == "registry":
                    deadline = time.monotonic() + 30
                    while not (home / "config.yml").exists() and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
            env["_HOME"] = str(home)
            env["_JOIN_PORT"] = str(join_port)
            # What docker-compose's healthchecks ask each process (the xDS server on its health port).
            env["_HEALTH_CHECKS"] = json.dumps(
                [
                    [f"127.0.0.1:{registry_port}"],
                    [f"127.0.0.1:{xds_health_port}", ADS_SERVICE],
                    [f"127.0.0.1:{provisioner_port}"],
                    [f"127.0.0.1:{certificates_port}"],
                ]
            )
            yield env
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)
            for pid_file in home.glob("**/*.pid"):
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GATEHOUSE, *args], env=env, capture_output=True, text=True, timeout=120)


def test_skeleton_scenario_across_four_processes(split: dict[str, str], tmp_path: Path) -> None:
    home = Path(split["_HOME"])
    gateway = tmp_path / "gateway.dstack.yml"
    gateway.write_text("type: gateway\nname: split-gw\nbackend: local\nregion: local\n")
    result = _cli(split, "apply", "-f", str(gateway), "-y")
    logs = "".join(p.read_text() for p in home.glob("*.log"))
    assert result.returncode == 0, result.stderr + logs
    shown = _cli(split, "gateway", "get", "split-gw", "--json")
    host = json.loads(shown.stdout)["status"]["hostname"]
    gateway_port, app_port = free_port(), free_port()
    service = tmp_path / "service.dstack.yml"
    service.write_text(
        textwrap.dedent(
            f"""
            type: service
            gateway: {host}
            port: "{gateway_port}:{app_port}"
            commands:
              - python -m http.server {app_port}
            """
        )
    )
    result = _cli(split, "apply", "-f", str(service), "-y")
    assert result.returncode == 0, result.stderr
    token = yaml.safe_load((home / "config.yml").read_text())["token"]
    assert fetch(f"http://{host}:{gateway_port}/", token=token)[0] == 200
    assert fetch(f"http://{host}:{gateway_port}/")[0] == 401  # auth: true is the default
    assert _cli(split, "delete", "-f", str(service), "-y").returncode == 0
    assert _cli(split, "delete", "-f", str(gateway), "-y").returncode == 0


async def _internal_ca(registry: str, system_token: str, home: Path) -> InternalCA:
    """The CA the registry keeps in its database, as every process gets it."""
    stubs = Stubs.connect(registry, system_token)
    try:
        sealed = await stubs.control_plane.GetInternalCA(registry_pb2.GetInternalCARequest())
    finally:
        await stubs.close()
    cipher = Cipher(configured_key(home / "server" / "encryption.key"))
    return InternalCA.unsealed(sealed.certificate_pem, sealed.key_encrypted, cipher)


def _health(port: int, credentials: grpc.ChannelCredentials | None) -> str:
    """gateway_xds's health check answer over plain text (None) or TLS, else the error's code."""
    options = [("grpc.ssl_target_name_override", XDS_SERVER_NAME)]
    address = f"127.0.0.1:{port}"
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials, options)
    )
    with channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            # typeshed's HealthStub declares no methods.
            answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
        except grpc.RpcError as error:
            return str(error.code())
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


async def test_split_xds_requires_client_certificates_of_the_ca_the_provisioner_signs_with(
    split: dict[str, str],
) -> None:
    """As in `gatehouse server`: gateway_xds serves mTLS with the internal CA, which the provisioner
    shares (local Envoys get certificates of it, cloud hosts join at its join endpoint)."""
    home = Path(split["_HOME"])
    xds_port = int(split["GATEHOUSE_XDS_PORT"])
    ca = await _internal_ca(split["GATEHOUSE_REGISTRY"], split["GATEHOUSE_SYSTEM_TOKEN"], home)
    gateway = ca.client_certificate("split-health")
    assert _health(xds_port, gateway_channel_credentials(gateway)) == "SERVING"
    assert _health(xds_port, None) == "StatusCode.UNAVAILABLE"
    without_certificate = grpc.ssl_channel_credentials(ca.certificate_pem)
    assert _health(xds_port, without_certificate) == "StatusCode.UNAVAILABLE"
    other = InternalCA.create().client_certificate("split-health")
    other_credentials = grpc.ssl_channel_credentials(ca.certificate_pem, other.key_pem, other.certificate_pem)
    assert _health(xds_port, other_credentials) == "StatusCode.UNAVAILABLE"

    # The provisioner's join endpoint answers with a certificate of the same CA.
    context = ssl.create_default_context(cadata=ca.certificate_pem.decode())
    context.check_hostname = False
    connection = http.client.HTTPSConnection(
        "127.0.0.1", int(split["_JOIN_PORT"]), context=context, timeout=10
    )
    try:
        connection.request("POST", JOIN_PATH, body=b"", headers={"Authorization": "Bearer not-a-token"})
        answer = connection.getresponse()
        assert (answer.status, answer.read()) == (401, b"the join token is unknown, used or expired\n")
    finally:
        connection.close()


def test_each_process_is_healthy_as_docker_compose_asks(split: dict[str, str]) -> None:
    """The healthcheck every docker-compose process runs, once each is up (bounded polling)."""
    for args in json.loads(split["_HEALTH_CHECKS"]):
        argv = [sys.executable, "-m", "services.common.health_check", *args]
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            if check.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (check.returncode, check.stderr) == (0, ""), args

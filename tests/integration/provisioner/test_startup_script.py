"""The startup script a cloud gateway host runs, run here: it exchanges its join token for a client
certificate, and the Envoy bootstrap it writes starts a real Envoy that reaches LIVE against a local
gateway_xds over mTLS and acknowledges its configuration."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest

from gatehouse.v1 import resources_pb2
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Backend
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener, VirtualHost
from gateway_xds.publish import publish
from gateway_xds.server.peer import PeerCertificateAuthorizer
from gateway_xds.server.reporter import RecordingReporter
from gateway_xds.server.server import XdsServer, build_xds_server
from services.common.internal_ca import InternalCA, xds_server_credentials
from services.common.probes import free_port, http_get
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.local.gateway import envoy_binary
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from services.provisioner.hosts.startup import (
    BOOTSTRAP_PATH,
    CLIENT_CERTIFICATE_PATH,
    CLIENT_KEY_PATH,
    CONFIG_DIR,
    ENVOY_IMAGE,
    JOIN_TOKEN_PATH,
    UNIT_PATH,
    JoinEndpoint,
    envoy_args,
)
from services.provisioner.join import JOIN_PATH, JoinServer, JoinTokens
from tests.support.real import require_real

pytestmark = pytest.mark.real

GATEWAY_ID = "gw-startup0001"
HOST_INDEX = 1
DEADLINE_SECONDS = 20.0


def gateway() -> resources_pb2.Gateway:
    spec = resources_pb2.GatewaySpec(backend="aws", region="eu-west-1", public_ip=True, replicas=2)
    return resources_pb2.Gateway(id=GATEWAY_ID, project="main", name="startup", spec=spec)


def run_script(script: str, root: Path) -> list[list[str]]:
    """Runs the script as a host would, with `docker`, `systemctl` and `apt-get` recording their calls."""
    stubs = root / "stubs"
    stubs.mkdir()
    calls = root / "calls.jsonl"
    for name in ("docker", "systemctl", "apt-get"):
        stub = stubs / name
        stub.write_text(
            "#!/usr/bin/env python3\nimport json, os, sys\n"
            f"open({str(calls)!r}, 'a')"
            ".write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + '\\n')\n"
        )
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "GATEHOUSE_ROOT": str(root / "host")}
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    return [json.loads(line) for line in calls.read_text().splitlines()]


class ControlPlane(NamedTuple):
    cache: SnapshotCache
    reporter: RecordingReporter
    server: XdsServer
    tokens: JoinTokens
    join: JoinEndpoint

    def plan(self) -> GatewayPlan:
        """The gateway's plan with a fresh join token for host HOST_INDEX."""
        plan = GatewayPlan.of(gateway(), XdsEndpoint("127.0.0.1", self.server.port))
        token = self.tokens.issue(GATEWAY_ID, HOST_INDEX)
        return dataclasses.replace(plan, join_token=token, join=self.join)


@pytest.fixture(scope="module")
async def control_plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ControlPlane]:
    """gateway_xds over mTLS and the join endpoint, both with one internal CA."""
    cache, reporter, ca = SnapshotCache(), RecordingReporter(), InternalCA.create()
    credentials = xds_server_credentials(ca, [])
    server = build_xds_server(cache, PeerCertificateAuthorizer(), reporter, "127.0.0.1:0", credentials)
    await server.start()
    tokens = JoinTokens(tmp_path_factory.mktemp("join") / "join-tokens.json")
    join_server = JoinServer(ca, tokens, ["127.0.0.1"])
    await join_server.start("127.0.0.1", 0)
    join = JoinEndpoint(f"https://127.0.0.1:{join_server.port}{JOIN_PATH}", ca.certificate_pem.decode())
    yield ControlPlane(cache, reporter, server, tokens, join)
    await join_server.stop()
    await server.stop(grace=None)


def test_the_script_writes_the_bootstrap_and_a_unit_running_the_official_image(tmp_path: Path) -> None:
    plan = GatewayPlan.of(gateway(), XdsEndpoint("xds.example.com", 50052))
    calls = run_script(plan.startup_script(HOST_INDEX), tmp_path)
    host = tmp_path / "host"
    bootstrap = json.loads((host / BOOTSTRAP_PATH.lstrip("/")).read_text())
    assert bootstrap == plan.bootstrap(HOST_INDEX)
    assert bootstrap["node"]["id"] == f"gateway/{GATEWAY_ID}/{HOST_INDEX}"
    unit = (host / UNIT_PATH.lstrip("/")).read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(" ".join([ENVOY_IMAGE, *envoy_args()]))
    assert "--network host" in exec_start
    assert not (host / JOIN_TOKEN_PATH.lstrip("/")).exists()
    # Docker is "installed" (the stub), so nothing is installed; the unit is enabled and started.
    assert calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "gatehouse-envoy.service"],
    ]


async def test_the_join_token_becomes_a_client_certificate_and_is_deleted(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    await asyncio.to_thread(run_script, control_plane.plan().startup_script(HOST_INDEX), tmp_path)
    host = tmp_path / "host"
    assert not (host / JOIN_TOKEN_PATH.lstrip("/")).exists()
    assert (host / CLIENT_CERTIFICATE_PATH.lstrip("/")).read_text().startswith("-----BEGIN CERTIFICATE")
    assert stat.S_IMODE((host / CLIENT_KEY_PATH.lstrip("/")).stat().st_mode) == 0o600


async def test_the_bootstrap_the_script_writes_reaches_live_against_the_control_plane(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    try:
        binary = envoy_binary()
    except BackendError as error:
        require_real(str(error))
    cache, reporter = control_plane.cache, control_plane.reporter
    await asyncio.to_thread(run_script, control_plane.plan().startup_script(HOST_INDEX), tmp_path)
    # The files the bootstrap names are under the scratch root here, not in /etc.
    written = (tmp_path / "host" / BOOTSTRAP_PATH.lstrip("/")).read_text()
    config = tmp_path / "envoy.json"
    config.write_text(written.replace(f'"{CONFIG_DIR}/', f'"{tmp_path / "host"}{CONFIG_DIR}/'))
    node_id = f"gateway/{GATEWAY_ID}/{HOST_INDEX}"

    listener_port, admin_port = free_port(), free_port()
    ir = GatewayIR(
        GATEWAY_ID,
        listeners=(
            HTTPListener("port-80", "127.0.0.1", listener_port, (VirtualHost("v", ("a.test",), "b"),)),
        ),
        backends=(Backend("b", (), connect_timeout_ms=1000),),
    )
    publish(cache, ir, revision=7)
    # The host's own arguments; only the admin port moves, to keep clear of anything else here.
    argv = [str(binary), *envoy_args(str(config))]
    argv += [
        "--config-yaml",
        json.dumps({"admin": {"address": {"socket_address": {"port_value": admin_port}}}}),
    ]
    argv += ["--disable-hot-restart", "--concurrency", "1", "--base-id", str(os.getpid() + 1)]
    log_path = tmp_path / "envoy.log"
    ready = "no answer"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            await reporter.wait_for(lambda r: r.kind == "acked" and r.node_id == node_id and r.revision == 7)
            # /ready answers 200 and LIVE only once the initial configuration has been applied.
            while "LIVE" not in (ready := str(await http_get("127.0.0.1", admin_port, "/ready"))):
                assert process.poll() is None, log_path.read_text()
                await asyncio.sleep(0.1)
            status, _ = await http_get("127.0.0.1", listener_port, "/")
            assert status == 404
    except TimeoutError:
        pytest.fail(
            f"Envoy never reached LIVE ({ready}); reports {reporter.reports}; log:\n{log_path.read_text()}"
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

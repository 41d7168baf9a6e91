"""gateway_xds end to end on real Envoys: registry writes become routes, under load, across a crash.

One in-process registry (SQLite) and, per scenario, real Envoys with the Delta bootstrap the
provisioner renders. Most tests use `gatehouse xds` as a subprocess, so it can be killed; the
rejection test runs gateway_xds in-process with a test-only resource hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatehouse.client.connection import Stubs
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.gateway_identity import node_id
from gateway_xds.app import XdsApp
from gateway_xds.ir.routes import DEFAULT_MAX_REQUEST_BODY_BYTES
from gateway_xds.resources import CLUSTER
from gateway_xds.server.server import ADS_SERVICE
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.load import LoadLoop
from gateway_xds.testing.registry_driver import RegistryDriver
from gateway_xds.testing.upstream import Upstream
from gateway_xds.translate.local_replies import NO_SERVICE_BODY
from services.common.grpc_server import bind_server, start_server
from services.common.internal_ca import XDS_SERVER_NAME, InternalCA, gateway_channel_credentials
from services.common.settings import Settings
from services.registry.app import Registry
from tests.support.certs import client_files
from tests.support.real import require_real

pytestmark = pytest.mark.real

DEADLINE_SECONDS = 30.0
GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")
DOMAIN = "xds.test"
OTHER_SERVICES = 200


@dataclass
class LiveRegistry:
    address: str
    system_token: str
    driver: RegistryDriver
    # The internal CA the registry made, and the key every other process decrypts it with.
    ca: InternalCA
    encryption_key: str


@pytest.fixture(scope="module")
async def registry(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveRegistry]:
    if envoy_binary() is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    home = tmp_path_factory.mktemp("xds-registry")
    settings = replace(
        Settings.from_env(), home=home, db_url=f"sqlite+aiosqlite:///{home / 'registry.sqlite'}"
    )
    registry = await Registry.start(settings)
    server, port = bind_server(registry.authenticator, "127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    await registry.bootstrap(settings, address)
    await start_server(server, registry.registrations())
    system_token = (home / "server" / "system-token").read_text().strip()
    # The driver registers replicas at 127.0.0.1, as Gatehouse's own runners do: only its token may.
    system = Stubs.connect(address, system_token)
    key = (home / "server" / "encryption.key").read_text().strip()
    yield LiveRegistry(
        address, system_token, RegistryDriver(system, system), await registry.internal_ca(), key
    )
    await system.close()
    await server.stop(None)
    await registry.close()


class XdsProcess:
    """`gatehouse xds` on a fixed port, killable and restartable."""

    def __init__(self, registry: LiveRegistry, home: Path) -> None:
        self.port = free_port()
        self._home = home
        self._env = dict(
            os.environ,
            GATEHOUSE_HOME=str(home),
            GATEHOUSE_SYSTEM_TOKEN=registry.system_token,
            GATEHOUSE_ENCRYPTION_KEY=registry.encryption_key,
            GATEHOUSE_XDS_PORT=str(self.port),
            GATEHOUSE_METRICS_PORT="0",
        )
        self._registry = registry.address
        self._ca = registry.ca
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self._home / "xds.log").open("ab") as log:
            self.process = subprocess.Popen(
                [GATEHOUSE, "xds", "--registry", self._registry], env=self._env, stdout=log, stderr=log
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return (self._home / "xds.log").read_text(errors="replace")

    async def ca(self) -> InternalCA:
        """The internal CA `gatehouse xds` gets from the registry: it serves mTLS with it."""
        return self._ca

    async def wait_serving(self) -> None:
        credentials = gateway_channel_credentials((await self.ca()).client_certificate("health"))
        options = [("grpc.ssl_target_name_override", XDS_SERVER_NAME)]
        async with grpc.aio.secure_channel(f"127.0.0.1:{self.port}", credentials, options) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=ADS_SERVICE)
            async with asyncio.timeout(DEADLINE_SECONDS):
                while True:
                    assert self.process is not None and self.process.poll() is None, self.log()
                    try:
                        if (
                            await health.Check(request, timeout=1)  # type: ignore[attr-defined]
                        ).status == health_pb2.HealthCheckResponse.SERVING:
                            return
                    except grpc.aio.AioRpcError:
                        pass
                    await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def xds(registry: LiveRegistry, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[XdsProcess]:
    process = XdsProcess(registry, tmp_path_factory.mktemp("xds-home"))
    process.start()
    await process.wait_serving()
    yield process
    process.stop()


@dataclass
class Gateway:
    name: str
    id: str
    port: int
    envoy: EnvoyProcess

    @property
    def node_id(self) -> str:
        return node_id(self.id, 0)


async def start_gateway(
    registry: LiveRegistry,
    xds_port: int,
    name: str,
    domain: str | None,
    workdir: Path,
    ca: InternalCA | None = None,
    other_xds_ports: tuple[int, ...] = (),
) -> Gateway:
    """With `ca`, the Envoy connects over mTLS (as to `gatehouse xds`), else in plain text."""
    port = free_port()
    gateway = await registry.driver.running_gateway(name, "127.0.0.1", port, domain=domain)
    tls = None if ca is None else client_files(ca, gateway.id, workdir)
    others = tuple(("127.0.0.1", other) for other in other_xds_ports)
    params = BootstrapParams(
        gateway.id, 0, "127.0.0.1", xds_port, admin_port=free_port(), tls=tls, other_xds=others
    )
    binary = envoy_binary()
    assert binary is not None
    envoy = EnvoyProcess(binary, workdir, render_bootstrap(params))
    envoy.start()
    await asyncio.to_thread(envoy.wait_ready)
    return Gateway(name, gateway.id, port, envoy)


@pytest.fixture(scope="module")
async def domain_gateway(
    registry: LiveRegistry, xds: XdsProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    workdir = tmp_path_factory.mktemp("envoy-edge")
    gateway = await start_gateway(registry, xds.port, "edge", DOMAIN, workdir, await xds.ca())
    yield gateway
    gateway.envoy.stop()


@pytest.fixture(scope="module")
async def port_gateway(
    registry: LiveRegistry, xds: XdsProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    workdir = tmp_path_factory.mktemp("envoy-ports")
    gateway = await start_gateway(registry, xds.port, "ports", None, workdir, await xds.ca())
    yield gateway
    gateway.envoy.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(b"hello from upstream") as server:
        yield server


async def status_of(gateway: Gateway, host: str = "", path: str = "/") -> tuple[int, str]:
    headers_host = host or f"127.0.0.1:{gateway.port}"
    return await asyncio.to_thread(_fetch_with_host, gateway.port, headers_host, path)


def _fetch_with_host(port: int, host: str, path: str) -> tuple[int, str]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError as error:
        return 0, repr(error)
    finally:
        connection.close()


async def eventually(
    check: Callable[[], Awaitable[Any]], expected: Any, what: str, envoy: EnvoyProcess
) -> Any:
    """Poll `check` until it returns `expected` (or a tuple starting with it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last == expected or (isinstance(last, tuple) and last[0] == expected):
            return last
        await asyncio.sleep(0.05)
    pytest.fail(f"{what}: expected {expected!r}, last got {last!r}; Envoy log:\n{envoy.log()[-3000:]}")


async def acked(registry: LiveRegistry, gateway: Gateway, revision: int) -> bool:
    status = (await registry.driver.gateway(gateway.name)).status
    return any(e.node_id == gateway.node_id and e.acked_revision >= revision for e in status.envoys)


async def serve_domain_service(
    registry: LiveRegistry, gateway: Gateway, name: str, upstream: Upstream
) -> str:
    """Apply a service with one ready replica on `gateway` and wait until Envoy answers 200; its host."""
    host = f"{name}.{DOMAIN}"
    await registry.driver.service(name, gateway.name, 8000)
    await registry.driver.replica(name, f"{name}-0", f"127.0.0.1:{upstream.port}")

    async def check() -> tuple[int, str]:
        return await status_of(gateway, host)

    await eventually(check, 200, f"service {name}", gateway.envoy)
    return host


# -- 404 → 200 → 404, both modes ---------------------------------------------------------------------


async def test_domain_service_appears_and_disappears(
    registry: LiveRegistry, domain_gateway: Gateway, upstream: Upstream
) -> None:
    host = f"hello.{DOMAIN}"
    gateway, driver = domain_gateway, registry.driver

    async def check() -> tuple[int, str]:
        return await status_of(gateway, host)

    assert await eventually(check, 404, "before apply", gateway.envoy) == (404, NO_SERVICE_BODY)
    await driver.service("hello", "edge", 8000)
    await driver.replica("hello", "hello-0", f"127.0.0.1:{upstream.port}")
    assert (await eventually(check, 200, "after apply", gateway.envoy))[1] == upstream.body.decode()
    # The port in the Host header does not matter, nor does a trailing dot.
    assert (await status_of(gateway, f"{host}:{gateway.port}"))[0] == 200
    assert (await status_of(gateway, f"{host}."))[0] == 200
    assert (await status_of(gateway, f"other.{DOMAIN}"))[0] == 404
    await driver.delete_service("hello", "edge", 8000)
    await eventually(check, 404, "after delete", gateway.envoy)


async def test_port_mapped_service_appears_and_disappears(
    registry: LiveRegistry, port_gateway: Gateway, upstream: Upstream
) -> None:
    gateway, driver = port_gateway, registry.driver

    async def check() -> tuple[int, str]:
        return await status_of(gateway)

    await eventually(check, 404, "before apply", gateway.envoy)
    await driver.service("mapped", "ports", 8000)  # `port: 8000` alone is gateway port 80
    await driver.replica("mapped", "mapped-0", f"127.0.0.1:{upstream.port}")
    assert (await eventually(check, 200, "after apply", gateway.envoy))[1] == upstream.body.decode()
    assert (await status_of(gateway, "any.name.at.all"))[0] == 200
    await driver.delete_service("mapped", "ports", 8000)
    await eventually(check, 404, "after delete", gateway.envoy)


async def test_zero_ready_replicas_answer_503_with_a_short_body(
    registry: LiveRegistry, domain_gateway: Gateway, upstream: Upstream
) -> None:
    host = f"idle.{DOMAIN}"
    await registry.driver.service("idle", "edge", 8000)
    await registry.driver.replica("idle", "idle-0", f"127.0.0.1:{upstream.port}", ready=False)

    async def check() -> tuple[int, str]:
        return await status_of(domain_gateway, host)

    _, body = await eventually(check, 503, "no ready replica", domain_gateway.envoy)
    assert body == "service unavailable: no ready replicas\n"
    await registry.driver.replica("idle", "idle-0", f"127.0.0.1:{upstream.port}", ready=True)
    await eventually(check, 200, "replica ready", domain_gateway.envoy)
    await registry.driver.delete_service("idle", "edge", 8000)


async def test_a_services_cluster_keeps_only_the_stats_that_are_read(
    registry: LiveRegistry, domain_gateway: Gateway, upstream: Upstream
) -> None:
    await serve_domain_service(registry, domain_gateway, "counted", upstream)
    cluster = "cluster.svc_main_counted."
    stats = {name.removeprefix(cluster) for name in domain_gateway.envoy.stats(cluster)}
    assert {"upstream_rq_total", "upstream_rq_2xx", "membership_healthy"} <= stats
    # Stats Envoy would otherwise keep (and push to the sink) for every service are never made.
    assert not stats & {"upstream_cx_total", "upstream_rq_completed", "upstream_cx_rx_bytes_total"}
    assert domain_gateway.envoy.stats("cluster.gatehouse_xds.upstream_cx_total")
    assert domain_gateway.envoy.stats("listener_manager.listener_added")
    await registry.driver.delete_service("counted", "edge", 8000)


async def test_a_domain_service_gets_forwarded_headers_websockets_and_a_body_limit(
    registry: LiveRegistry, domain_gateway: Gateway, upstream: Upstream
) -> None:
    host = await serve_domain_service(registry, domain_gateway, "features", upstream)
    spoofed = {"X-Real-IP": "203.0.113.9", "X-Forwarded-Host": "evil.test", "X-Forwarded-Proto": "https"}
    status, body = await asyncio.to_thread(_get_headers, domain_gateway.port, host, spoofed)
    headers = json.loads(body)
    assert status == 200, body
    # The peer's address, whatever the client claimed; X-Forwarded-For gets Envoy's own host address
    # appended for a loopback peer (Envoy's rule), so only its presence is checked.
    assert headers["x-real-ip"] == "127.0.0.1" and headers["x-envoy-external-address"] == "127.0.0.1"
    assert headers["x-forwarded-for"]
    assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-host"] == host
    assert headers["x-forwarded-port"] == str(domain_gateway.port)
    assert await asyncio.to_thread(_post_status, domain_gateway.port, host, 1000) == (
        200,
        "received 1000 bytes\n",
    )
    too_large = DEFAULT_MAX_REQUEST_BODY_BYTES + 1
    assert await asyncio.to_thread(_announce_body, domain_gateway.port, host, too_large) == 413
    assert await asyncio.to_thread(_websocket_echo, domain_gateway.port, host, b"ping over the tunnel") == (
        b"ping over the tunnel"
    )
    await registry.driver.delete_service("features", "edge", 8000)


def _get_headers(port: int, host: str, extra: dict[str, str]) -> tuple[int, str]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/headers", headers={"Host": host, **extra})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _post_status(port: int, host: str, size: int) -> tuple[int, str]:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", "/", body=b"x" * size, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _announce_body(port: int, host: str, size: int) -> int:
    """Send only the headers of a request announcing `size` bytes; the answer comes before any body."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", "/", skip_host=True)
        connection.putheader("Host", host)
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def _websocket_echo(port: int, host: str, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            f"GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        connection.sendall(payload)
        echoed = b""
        while len(echoed) < len(payload):
            chunk = connection.recv(4096)
            assert chunk, echoed
            echoed += chunk
        return echoed


# -- no request fails while the configuration changes -------------------------------------------------


async def test_adding_and_removing_services_fails_no_request(
    registry: LiveRegistry, domain_gateway: Gateway, upstream: Upstream
) -> None:
    gateway, driver = domain_gateway, registry.driver
    await driver.service("steady", "edge", 8000)
    await driver.replica("steady", "steady-0", f"127.0.0.1:{upstream.port}")

    async def check() -> tuple[int, str]:
        return await status_of(gateway, f"steady.{DOMAIN}")

    await eventually(check, 200, "steady service", gateway.envoy)
    listeners_before = gateway.envoy.stats("listener_manager.listener_modified")
    load = LoadLoop(gateway.port, host=f"steady.{DOMAIN}", connections=4).start()
    try:
        await asyncio.to_thread(load.wait_for, 50)
        names = [f"churn-{i}" for i in range(OTHER_SERVICES)]
        for name in names:
            await driver.service(name, "edge", 8000)
            await driver.replica(name, f"{name}-0", f"127.0.0.1:{upstream.port}")
        last = await driver.service(names[-1], "edge", 8000)

        async def last_added() -> tuple[int, str]:
            return await status_of(gateway, f"{names[-1]}.{DOMAIN}")

        await eventually(last_added, 200, "the last service added", gateway.envoy)
        for name in names:
            await driver.delete_service(name, "edge", 8000)
        await eventually(last_added, 404, "the last service removed", gateway.envoy)
        served_during_changes = load.result.total
    finally:
        result = load.stop()
    assert result.failures == 0, result.summary()
    assert served_during_changes > 100, result.summary()
    assert last.spec.hostname == f"{names[-1]}.{DOMAIN}"
    # Routes changed through scopes only: the listener was never replaced.
    assert gateway.envoy.stats("listener_manager.listener_modified") == listeners_before


# -- a crashed control plane -----------------------------------------------------------------------


def _without_timestamps(dump: Any) -> Any:
    """The config dump with what changes by itself (timestamps of the bootstrap) left out."""
    if isinstance(dump, dict):
        return {k: _without_timestamps(v) for k, v in dump.items() if k != "uptime"}
    if isinstance(dump, list):
        return [_without_timestamps(v) for v in dump]
    return dump


def _diff(before: Any, after: Any) -> str:
    lines = [
        json.dumps(_without_timestamps(d), indent=1, sort_keys=True).splitlines() for d in (before, after)
    ]
    return "\n".join(difflib.unified_diff(lines[0], lines[1], "before", "after", lineterm="", n=2))


async def test_envoy_serves_through_a_control_plane_crash_and_converges(
    registry: LiveRegistry, xds: XdsProcess, domain_gateway: Gateway, upstream: Upstream
) -> None:
    gateway, driver = domain_gateway, registry.driver
    await driver.service("durable", "edge", 8000)
    await driver.replica("durable", "durable-0", f"127.0.0.1:{upstream.port}")

    async def check() -> tuple[int, str]:
        return await status_of(gateway, f"durable.{DOMAIN}")

    await eventually(check, 200, "durable service", gateway.envoy)
    revision = (await driver.service("durable", "edge", 8000)).resource_version

    async def applied() -> bool:
        return await acked(registry, gateway, revision)

    await eventually(applied, True, "the durable service acknowledged", gateway.envoy)
    before = gateway.envoy.config_dump()
    reported_before = next(
        e.updated_at.ToNanoseconds()
        for e in (await driver.gateway("edge")).status.envoys
        if e.node_id == gateway.node_id
    )
    load = LoadLoop(gateway.port, host=f"durable.{DOMAIN}", connections=4).start()
    try:
        await asyncio.to_thread(load.wait_for, 50)
        xds.kill()
        served_at_kill = load.result.total
        await asyncio.to_thread(load.wait_for, served_at_kill + 200)
        assert load.result.total >= served_at_kill + 200, "Envoy stopped serving without its control plane"
        xds.start()
        await xds.wait_serving()

        async def reported_again() -> bool:
            status = (await driver.gateway("edge")).status
            return any(
                e.node_id == gateway.node_id
                and e.connected
                and e.acked_revision >= revision
                and e.updated_at.ToNanoseconds() > reported_before
                for e in status.envoys
            )

        await eventually(reported_again, True, "Envoy reconnected and acknowledged", gateway.envoy)
        await asyncio.to_thread(load.wait_for, load.result.total + 100)
    finally:
        result = load.stop()
    assert result.failures == 0, result.summary()
    # Nothing changed, so nothing was re-sent: even the last_updated times are the same.
    after = gateway.envoy.config_dump()
    assert _without_timestamps(after) == _without_timestamps(before), _diff(before, after)
    # And the restarted control plane is live.
    await driver.service("after-restart", "edge", 8000)
    await driver.replica("after-restart", "after-restart-0", f"127.0.0.1:{upstream.port}")

    async def new_service() -> tuple[int, str]:
        return await status_of(gateway, f"after-restart.{DOMAIN}")

    await eventually(new_service, 200, "a service added after the restart", gateway.envoy)


# -- several copies of gateway_xds ------------------------------------------------------------------

FAILOVER_DOMAIN = "failover.test"


async def test_an_envoy_fails_over_to_another_copy_of_gateway_xds_and_converges(
    registry: LiveRegistry, xds: XdsProcess, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The bootstrap names two copies; the one the Envoy streams from is killed under load: the Envoy
    keeps serving, moves to the other copy, is sent nothing it already has, and takes new changes."""
    driver = registry.driver
    second = XdsProcess(registry, tmp_path_factory.mktemp("xds-second-home"))
    workdir = tmp_path_factory.mktemp("envoy-failover")
    # The second copy is not started yet: the Envoy's stream can only be with the first.
    gateway = await start_gateway(
        registry, xds.port, "failover", FAILOVER_DOMAIN, workdir, await xds.ca(), (second.port,)
    )
    second.start()
    try:
        await second.wait_serving()
        await driver.service("steady", "failover", 8000)
        await driver.replica("steady", "steady-0", f"127.0.0.1:{upstream.port}")

        async def steady() -> tuple[int, str]:
            return await status_of(gateway, f"steady.{FAILOVER_DOMAIN}")

        assert (await eventually(steady, 200, "steady service", gateway.envoy))[1] == upstream.body.decode()
        revision = (await driver.service("steady", "failover", 8000)).resource_version

        async def applied() -> bool:
            return await acked(registry, gateway, revision)

        await eventually(applied, True, "steady acknowledged", gateway.envoy)
        before = gateway.envoy.config_dump()
        load = LoadLoop(gateway.port, host=f"steady.{FAILOVER_DOMAIN}", connections=4).start()
        try:
            await asyncio.to_thread(load.wait_for, 50)
            xds.kill()
            killed_at = asyncio.get_running_loop().time()
            await driver.service("moved", "failover", 8000)
            await driver.replica("moved", "moved-0", f"127.0.0.1:{upstream.port}")

            async def moved() -> tuple[int, str]:
                return await status_of(gateway, f"moved.{FAILOVER_DOMAIN}")

            await eventually(moved, 200, "a change made after the failover", gateway.envoy)
            failover_seconds = asyncio.get_running_loop().time() - killed_at
            await asyncio.to_thread(load.wait_for, load.result.total + 100)
        finally:
            result = load.stop()
        assert result.failures == 0, result.summary()
        print(f"failover: a change made as the Envoy's copy died was live in {failover_seconds:.2f} s")
        # What had not changed was not sent again by the second copy.
        after = gateway.envoy.config_dump()
        steady_before = [c for c in _clusters(before) if "steady" in c]
        assert steady_before and steady_before == [c for c in _clusters(after) if "steady" in c]
    finally:
        second.stop()
        xds.start()
        await xds.wait_serving()
        gateway.envoy.stop()


def _clusters(dump: dict[str, Any]) -> list[str]:
    """The dynamic clusters of a config dump with the time each was last updated."""
    found = []
    for config in dump["configs"]:
        for cluster in config.get("dynamic_active_clusters", []):
            found.append(json.dumps(cluster, sort_keys=True))
    return found


# -- a configuration Envoy rejects -------------------------------------------------------------------

REJECTED_SERVICE = "rejected"


def reject_one_cluster(type_url: str, name: str, message: Message) -> Message:
    """The test-only hook: one service's cluster gets a connect timeout Envoy refuses."""
    if type_url == CLUSTER and name == f"svc_main_{REJECTED_SERVICE}":
        assert isinstance(message, cluster_pb2.Cluster)
        message.connect_timeout.CopyFrom(duration_pb2.Duration(seconds=-1))
    return message


@dataclass
class InProcessXds:
    app: XdsApp
    task: asyncio.Task[None]


@pytest.fixture(scope="module")
async def hooked_xds(registry: LiveRegistry) -> AsyncIterator[InProcessXds]:
    stubs = Stubs.connect(registry.address, registry.system_token)
    app = XdsApp.build(stubs, "127.0.0.1:0", hook=reject_one_cluster)
    task = asyncio.create_task(app.run())
    yield InProcessXds(app, task)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await stubs.close()


async def test_a_rejected_configuration_is_reported_once_and_never_resent(
    registry: LiveRegistry,
    hooked_xds: InProcessXds,
    upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    driver, stats = registry.driver, hooked_xds.app.server.stats
    port = hooked_xds.app.port
    bad = await start_gateway(registry, port, "nacked", None, tmp_path_factory.mktemp("envoy-nacked"))
    good = await start_gateway(registry, port, "bystander", None, tmp_path_factory.mktemp("envoy-bystander"))
    try:
        await driver.service("fine", "bystander", 8000)
        await driver.replica("fine", "fine-0", f"127.0.0.1:{upstream.port}")
        await driver.service(REJECTED_SERVICE, "nacked", 8000)

        async def rejection() -> str:
            status = (await driver.gateway("nacked")).status
            return next((e.rejected for e in status.envoys if e.rejected), "")

        async def reported() -> bool:
            return (await rejection()).startswith("config rejected: ")

        await eventually(reported, True, "the rejection on the gateway's status", bad.envoy)
        assert "Invalid duration" in await rejection()
        responses = stats.of_node(bad.node_id).responses
        assert stats.of_node(bad.node_id).nacks == 1
        # The control plane goes on working (here for the other gateway) and never re-sends.
        mapped = f"{free_port()}:8000"
        revision = (await driver.service("fine-too", "bystander", mapped)).resource_version

        async def bystander_applied() -> bool:
            return await acked(registry, good, revision)

        await eventually(bystander_applied, True, "the other gateway's change", good.envoy)
        assert (await status_of(good))[0] == 200
        assert stats.of_node(bad.node_id).responses == responses
        assert bad.envoy.stats("cluster_manager.cds.update_rejected") == {
            "cluster_manager.cds.update_rejected": 1
        }
        # Removing the rejected service clears the rejection.
        await driver.delete_service(REJECTED_SERVICE, "nacked", 8000)

        async def cleared() -> str:
            return await rejection()

        await eventually(cleared, "", "the rejection cleared", bad.envoy)
    finally:
        bad.envoy.stop()
        good.envoy.stop()

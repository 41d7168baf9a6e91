"""Access logs sampled under load, in a real Envoy: at low load every request of two services reaches
gateway_xds; a burst above the budget lowers the share of successes the Envoy logs (its runtime value,
over RTDS) while every error still arrives; once the load stops the share is back to all."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import http.client
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gatehouse import access_logs
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.v1 import registry_pb2
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.observe.access_logs import AccessLogOutbox, access_log_service
from gateway_xds.observe.log_sampling import LogSampling
from gateway_xds.observe.runtime_service import runtime_service
from gateway_xds.provider.policies import AUTHORIZATION_CLUSTER
from gateway_xds.publish import publish
from gateway_xds.server.server import XdsServer, build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.builders import DOMAIN, domain_gateway
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.load import LoadLoop
from gateway_xds.testing.reporters import NullReporter
from tests.support.real import require_real

pytestmark = pytest.mark.real

GATEWAY = "gw-sampled"
NODE = f"gateway/{GATEWAY}/0"
SERVICES = ("svc-main-alpha", "svc-main-beta")
# Entries a second from the Envoy above which successes are sampled; a loop of a few Python threads
# sends far more, a few sequential requests far less.
BUDGET = 40
WITHIN = 60.0
ALL = access_logs.SHARE_DENOMINATOR


def _upstream(marker: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            missing = self.path.startswith("/missing")
            body = b"no such page" if missing else marker.encode()
            self.send_response(404 if missing else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Plane:
    outbox: AccessLogOutbox
    sampling: LogSampling
    envoy: EnvoyProcess
    port: int

    def get(self, service: str, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers={"Host": f"{service}.{DOMAIN}"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def share(self) -> int:
        """The share of successes the Envoy logs, per million, as its runtime holds it."""
        entries = json.loads(self.envoy.admin("/runtime"))["entries"]
        value = entries.get(access_logs.SUCCESS_SHARE_KEY, {}).get("final_value", "")
        return round(float(value)) if value else -1

    def logged(self, path_prefix: str) -> list[registry_pb2.AccessLogEntry]:
        return [entry for _, entry in self.outbox.pending if entry.path.startswith(path_prefix)]


async def _until(condition: Callable[[], bool], what: str, within: float = WITHIN) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await asyncio.to_thread(condition):
        assert asyncio.get_running_loop().time() < deadline, f"still not {what} after {within} s"
        await asyncio.sleep(0.2)


def _gateway(port: int, upstreams: list[ThreadingHTTPServer]) -> GatewayIR:
    ir = domain_gateway(SERVICES[:1], (Endpoint("127.0.0.1", upstreams[0].server_address[1]),), GATEWAY, port)
    other = domain_gateway(
        SERVICES[1:], (Endpoint("127.0.0.1", upstreams[1].server_address[1]),), GATEWAY, port
    )
    listener = dataclasses.replace(
        ir.listeners[0],
        virtual_hosts=ir.listeners[0].virtual_hosts + other.listeners[0].virtual_hosts,
        authorization_cluster=AUTHORIZATION_CLUSTER,
    )
    return dataclasses.replace(ir, listeners=(listener,), backends=ir.backends + other.backends)


@pytest.fixture
def upstreams() -> Iterator[list[ThreadingHTTPServer]]:
    servers = [_upstream(f"marker-{name}") for name in SERVICES]
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def plane(tmp_path: Path, upstreams: list[ThreadingHTTPServer]) -> AsyncIterator[Plane]:
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    outbox = AccessLogOutbox(per_second=100_000)
    sampling = LogSampling(BUDGET)
    cache = SnapshotCache()
    server: XdsServer = build_xds_server(
        cache,
        NodeIdAuthorizer(),
        NullReporter(),
        "127.0.0.1:0",
        services=(access_log_service(outbox, sampling), runtime_service(sampling)),
    )
    await server.start()
    judging = asyncio.create_task(sampling.run())
    port = free_port()
    publish(cache, _gateway(port, upstreams), 1)
    params = BootstrapParams(GATEWAY, 0, "127.0.0.1", server.port, admin_port=free_port())
    envoy = EnvoyProcess(binary, tmp_path / "envoy", render_bootstrap(params))
    envoy.start()
    plane = Plane(outbox, sampling, envoy, port)
    try:
        for service in SERVICES:
            await _until(
                functools.partial(_answers, plane, service), f"served by Envoy ({envoy.log()[-2000:]})"
            )
        await _until(lambda: plane.share() == ALL, "given its runtime layer")
        yield plane
    finally:
        envoy.stop()
        judging.cancel()
        await server.stop(grace=None)


def _answers(plane: Plane, service: str) -> bool:
    try:
        return plane.get(service, "/ready")[1] == f"marker-{service}".encode()
    except OSError:
        return False


async def _requests(plane: Plane, path_prefix: str, count: int, status: int) -> None:
    for index in range(count):
        for service in SERVICES:
            answer = await asyncio.to_thread(plane.get, service, f"{path_prefix}-{index}")
            expected = b"no such page" if status == 404 else f"marker-{service}".encode()
            assert answer == (status, expected)


async def test_every_request_at_low_load_errors_always_and_successes_sampled_under_load(plane: Plane) -> None:
    await _requests(plane, "/quiet", 15, 200)
    await _until(lambda: len(plane.logged("/quiet")) == 15 * len(SERVICES), "all logged at low load")
    assert {entry.backend for entry in plane.logged("/quiet")} == set(SERVICES)
    assert not any(entry.HasField("successes_logged_percent") for entry in plane.logged("/quiet"))
    assert plane.sampling.percent(NODE) == 100

    load = LoadLoop(plane.port, f"{SERVICES[0]}.{DOMAIN}", "/busy", connections=4).start()
    try:
        await _until(lambda: plane.share() < ALL, "sampled under load")
        lowered = plane.sampling.percent(NODE)
        assert lowered is not None and lowered < 100
        await _requests(plane, "/missing", 20, 404)
        await _until(lambda: len(plane.logged("/missing")) == 20 * len(SERVICES), "every error logged")
        sent_before = load.result.total
        logged_before = len(plane.logged("/busy"))
        await asyncio.to_thread(load.wait_for, sent_before + 2_000, WITHIN)
    finally:
        result = load.stop()
    assert result.failures == 0, result.summary()
    await asyncio.sleep(access_logs.FLUSH_INTERVAL_MS / 1000 * 2)  # what Envoy still held
    busy = plane.logged("/busy")
    assert len(busy) - logged_before < (result.total - sent_before) / 2, (len(busy), result.summary())
    assert all(entry.successes_logged_percent < 100 for entry in busy[logged_before:])

    await _until(lambda: plane.share() == ALL, "back to every request once the load stopped")
    await _requests(plane, "/after", 15, 200)
    await _until(lambda: len(plane.logged("/after")) == 15 * len(SERVICES), "all logged again")
    assert not any(entry.HasField("successes_logged_percent") for entry in plane.logged("/after"))

"""A real Envoy configured by the xDS server: listeners, routes and endpoints take effect and are ACKed."""

import asyncio
import http.client
import itertools
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from envoy.config.listener.v3 import listener_pb2

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.publish import publish
from gateway_xds.resources import LISTENER
from gateway_xds.server.server import XdsServer, build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.reporters import RecordingReporter, Report
from gateway_xds.translate.local_replies import NO_READY_REPLICAS_BODY
from gateway_xds.translate.translator import translate
from tests.support.real import require_real

pytestmark = pytest.mark.real

GATEWAY_ID = "gw-int"
NODE_ID = f"gateway/{GATEWAY_ID}/0"
UPSTREAM_BODY = b"hello from upstream"
DEADLINE_SECONDS = 20.0

_revisions = itertools.count(1)


def envoy_binary() -> Path | None:
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("envoy")
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(UPSTREAM_BODY)))
        self.end_headers()
        self.wfile.write(UPSTREAM_BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@dataclass
class ControlPlane:
    cache: SnapshotCache
    reporter: RecordingReporter
    server: XdsServer


@pytest.fixture(scope="module")
async def control_plane() -> AsyncIterator[ControlPlane]:
    cache, reporter = SnapshotCache(), RecordingReporter()
    server = build_xds_server(cache, NodeIdAuthorizer(), reporter, "127.0.0.1:0")
    await server.start()
    yield ControlPlane(cache, reporter, server)
    await server.stop(grace=None)


def bootstrap(xds_port: int, admin_port: int, api_type: str) -> dict[str, object]:
    http2 = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    xds_endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": xds_port}}}
    return {
        "node": {"id": NODE_ID, "cluster": GATEWAY_ID},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": http2,
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [{"lb_endpoints": [{"endpoint": xds_endpoint}]}],
                    },
                }
            ]
        },
    }


@pytest.fixture(scope="module", params=["GRPC", "DELTA_GRPC"], ids=["sotw", "delta"])
async def envoy(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[Path]:
    """A running Envoy connected to the control plane, over either ADS variant; yields its log file."""
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    workdir = tmp_path_factory.mktemp("envoy")
    config = workdir / "bootstrap.yaml"
    config.write_text(yaml.safe_dump(bootstrap(control_plane.server.port, free_port(), request.param)))
    log_path = workdir / "envoy.log"
    # Envoy starts before any snapshot exists, as a freshly provisioned gateway would.
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                *("-c", str(config)),
                "--disable-hot-restart",
                *("--concurrency", "1"),
                *("--base-id", str(os.getpid())),
                *("--log-level", "warn"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    connected_before = len(control_plane.reporter.of_kind("connected"))
    try:
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                await control_plane.reporter.wait_for(
                    lambda r: (
                        r.kind == "connected"
                        and len(control_plane.reporter.of_kind("connected")) > connected_before
                    )
                )
        except TimeoutError:
            pytest.fail(f"Envoy never connected; exit code {process.poll()}; log:\n{log_path.read_text()}")
        yield log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def get(port: int, host: str = "example.test") -> tuple[int, bytes] | str:
    """(status, body), or the connection error as a string."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as error:
        return repr(error)
    finally:
        connection.close()


async def eventually(port: int, status: int, log: Path) -> bytes:
    """Poll until a request through Envoy gets `status`; returns the body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    last: tuple[int, bytes] | str = "no request made"
    while loop.time() < deadline:
        last = await asyncio.to_thread(get, port)
        if isinstance(last, tuple) and last[0] == status:
            return last[1]
        await asyncio.sleep(0.05)
    pytest.fail(f"expected HTTP {status} on port {port}, last got {last!r}; Envoy log:\n{log.read_text()}")


async def publish_and_wait_acked(control_plane: ControlPlane, ir: GatewayIR) -> int:
    revision = next(_revisions)
    publish(control_plane.cache, ir, revision)
    async with asyncio.timeout(DEADLINE_SECONDS):
        await control_plane.reporter.wait_for(
            lambda r: r.kind == "acked" and r.node_id == NODE_ID and r.revision == revision
        )
    return revision


def gateway(listener_port: int, domains: tuple[str, ...], endpoints: tuple[Endpoint, ...]) -> GatewayIR:
    return GatewayIR(
        gateway_id=GATEWAY_ID,
        listeners=(
            HTTPListener(
                f"port-{listener_port}",
                "127.0.0.1",
                listener_port,
                (VirtualHost("svc-int-hello", domains, "svc-int-hello"),),
            ),
        ),
        backends=(Backend("svc-int-hello", endpoints, connect_timeout_ms=1000),),
    )


async def test_route_takes_effect_and_is_acked(
    control_plane: ControlPlane, envoy: Path, upstream: int
) -> None:
    rejected_before = control_plane.reporter.of_kind("rejected")
    port = free_port()
    endpoints = (Endpoint("127.0.0.1", upstream),)
    await publish_and_wait_acked(control_plane, gateway(port, ("only.other.test",), endpoints))
    await eventually(port, 404, envoy)
    await publish_and_wait_acked(control_plane, gateway(port, ("*",), endpoints))
    assert await eventually(port, 200, envoy) == UPSTREAM_BODY
    assert control_plane.reporter.of_kind("rejected") == rejected_before


async def test_backend_without_endpoints_answers_503(
    control_plane: ControlPlane, envoy: Path, upstream: int
) -> None:
    rejected_before = control_plane.reporter.of_kind("rejected")
    port = free_port()
    await publish_and_wait_acked(control_plane, gateway(port, ("*",), (Endpoint("127.0.0.1", upstream),)))
    assert await eventually(port, 200, envoy) == UPSTREAM_BODY
    await publish_and_wait_acked(control_plane, gateway(port, ("*",), ()))
    assert await eventually(port, 503, envoy) == NO_READY_REPLICAS_BODY.encode()
    assert control_plane.reporter.of_kind("rejected") == rejected_before


async def test_service_added_to_a_live_gateway_is_not_left_warming(
    control_plane: ControlPlane, envoy: Path, upstream: int
) -> None:
    rejected_before = control_plane.reporter.of_kind("rejected")
    first, second = free_port(), free_port()
    endpoints = (Endpoint("127.0.0.1", upstream),)
    one = gateway(first, ("*",), endpoints)
    await publish_and_wait_acked(control_plane, one)
    added = GatewayIR(
        gateway_id=GATEWAY_ID,
        listeners=(
            *one.listeners,
            HTTPListener(f"port-{second}", "127.0.0.1", second, (VirtualHost("v", ("*",), "svc-int-added"),)),
        ),
        backends=(*one.backends, Backend("svc-int-added", endpoints, connect_timeout_ms=1000)),
    )
    await publish_and_wait_acked(control_plane, added)
    assert await eventually(second, 200, envoy) == UPSTREAM_BODY
    assert await eventually(first, 200, envoy) == UPSTREAM_BODY
    assert control_plane.reporter.of_kind("rejected") == rejected_before


async def test_rejected_listener_is_reported_and_a_fix_applies(
    control_plane: ControlPlane, envoy: Path, upstream: int
) -> None:
    port = free_port()
    good = gateway(port, ("*",), (Endpoint("127.0.0.1", upstream),))
    resources = translate(good)
    # Envoy refuses a listener address that is not an IP; IR validation would not let this through.
    listener: listener_pb2.Listener = resources[LISTENER][f"port-{port}"]
    listener.address.socket_address.address = "not-an-ip"
    bad = Snapshot(next(_revisions), resources)
    rejected_before = len(control_plane.reporter.of_kind("rejected"))
    control_plane.cache.set_snapshot(GATEWAY_ID, bad)

    def this_rejection(r: Report) -> bool:
        message = r.message or ""
        return r.kind == "rejected" and f"port-{port}" in message and "not-an-ip" in message

    async with asyncio.timeout(DEADLINE_SECONDS):
        report = await control_plane.reporter.wait_for(this_rejection)
    assert report.type_url == LISTENER
    await publish_and_wait_acked(control_plane, good)
    assert await eventually(port, 200, envoy) == UPSTREAM_BODY
    # Reported once, never re-sent in a loop.
    assert len(control_plane.reporter.of_kind("rejected")) == rejected_before + 1

"""An idle Envoy that pings its xDS connection keeps its ADS stream.

gRPC core counts a ping that comes sooner than the server's minimum interval (with no data sent in
between) as a strike and, after two, answers GOAWAY "too_many_pings", cancelling every stream of the
connection. The Envoy here runs the provisioner's bootstrap with its connection_keepalive interval cut
to one second and a configuration that never changes, so its connection carries nothing but pings; a
proxy between it and the server counts the PINGs it sends and the connections it opens, so the test
waits for a number of pings, not for a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatehouse.envoy_bootstrap import HTTP_PROTOCOL_OPTIONS, BootstrapParams, render_bootstrap
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.publish import publish
from gateway_xds.server.server import XdsServer, build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.builders import domain_gateway
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.reporters import RecordingReporter
from tests.support.real import require_real

pytestmark = pytest.mark.real

GATEWAY_ID = "gw-keepalive"
NODE_ID = f"gateway/{GATEWAY_ID}/0"
PING_INTERVAL = "1s"
# With gRPC core's defaults the 4th ping of an idle connection is its GOAWAY; twice that many.
PINGS = 8
DEADLINE_SECONDS = 60.0

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PING, _ACK = 0x6, 0x1


class PingCountingProxy:
    """A TCP proxy to the xDS server that counts the connections opened through it and the HTTP/2
    PINGs (not their ACKs) the client sends on them."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.closed = 0
        self.pings = 0
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Until `predicate` holds; bound the wait with asyncio.timeout."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def _note(self) -> None:
        self._changed.set()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._note()
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        upstream = asyncio.create_task(self._client_to_server(client_reader, server_writer))
        downstream = asyncio.create_task(self._copy(server_reader, client_writer))
        self._tasks |= {upstream, downstream}
        await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        for task in (upstream, downstream):
            task.cancel()
        for writer in (client_writer, server_writer):
            writer.close()
        self.closed += 1
        self._note()

    async def _client_to_server(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            preface = await reader.readexactly(len(_PREFACE))
            assert preface == _PREFACE, preface
            writer.write(preface)
            while True:
                header = await reader.readexactly(9)
                payload = await reader.readexactly(int.from_bytes(header[:3], "big"))
                if header[3] == _PING and not header[4] & _ACK:
                    self.pings += 1
                    self._note()
                writer.write(header + payload)
                await writer.drain()

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()


def pinging_bootstrap(xds_port: int) -> dict[str, Any]:
    """The provisioner's bootstrap, pinging every PING_INTERVAL, without its stats sink (its reports
    every 2 s would be answered, and data sent by the server clears the strikes)."""
    bootstrap = render_bootstrap(
        BootstrapParams(GATEWAY_ID, 0, "127.0.0.1", xds_port, admin_port=free_port())
    )
    del bootstrap["stats_sinks"]
    (cluster,) = bootstrap["static_resources"]["clusters"]
    http2 = cluster["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS]["explicit_http_config"]
    http2["http2_protocol_options"]["connection_keepalive"]["interval"] = PING_INTERVAL
    return bootstrap


@dataclass
class Setup:
    cache: SnapshotCache
    reporter: RecordingReporter
    server: XdsServer
    proxy: PingCountingProxy
    envoy: EnvoyProcess
    listener_port: int


@pytest.fixture(scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    cache, reporter = SnapshotCache(), RecordingReporter()
    server = build_xds_server(cache, NodeIdAuthorizer(), reporter, "127.0.0.1:0")
    await server.start()
    listener_port = free_port()
    publish(cache, domain_gateway(1, gateway_id=GATEWAY_ID, port=listener_port), 1)
    proxy = PingCountingProxy(server.port)
    proxy_port = await proxy.start()
    workdir: Path = tmp_path_factory.mktemp("envoy-keepalive")
    envoy = EnvoyProcess(binary, workdir, pinging_bootstrap(proxy_port))
    envoy.start()
    try:
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                await reporter.wait_for(lambda r: r.kind == "acked" and r.revision == 1)
        except TimeoutError:
            pytest.fail(f"Envoy never ACKed its configuration; log:\n{envoy.log()}")
        yield Setup(cache, reporter, server, proxy, envoy, listener_port)
    finally:
        envoy.stop()
        await proxy.stop()
        await server.stop(grace=None)


async def test_idle_envoy_pinging_every_second_keeps_its_ads_stream(setup: Setup) -> None:
    proxy, reporter = setup.proxy, setup.reporter
    assert (proxy.connections, proxy.closed) == (1, 0)
    first_ping = proxy.pings
    async with asyncio.timeout(DEADLINE_SECONDS):
        # Ends early when the connection is dropped.
        await proxy.until(lambda: proxy.pings >= first_ping + PINGS or proxy.closed > 0)
    assert reporter.of_kind("disconnected") == [], f"Envoy's log:\n{setup.envoy.log()}"
    assert len(reporter.of_kind("connected")) == 1
    assert (proxy.connections, proxy.closed) == (1, 0), "Envoy's xDS connection was dropped"
    assert [s.node_id for s in setup.server.stats.open_streams()] == [NODE_ID]
    # The same stream still carries changes.
    publish(setup.cache, domain_gateway(2, gateway_id=GATEWAY_ID, port=setup.listener_port), 2)
    async with asyncio.timeout(DEADLINE_SECONDS):
        await reporter.wait_for(lambda r: r.kind == "acked" and r.revision == 2)
    assert len(reporter.of_kind("connected")) == 1
    assert proxy.connections == 1

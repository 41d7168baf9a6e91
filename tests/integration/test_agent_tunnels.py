"""Replicas behind NAT over Envoy reverse tunnels, on real Envoys: a gateway Envoy configured by
gateway_xds, agents' Envoys run as `gatehouse agent` runs them (cli/agent_envoy.py), certificates of
a real internal CA. The replica listens where the gateway cannot connect to it by itself
(127.0.0.3, which the gateway's configuration never names): every answer comes over a tunnel.

Every test runs twice: agents dialling the gateway's tunnel port, and dialling its HTTPS port, which
they share with public HTTPS traffic (a gateway whose Envoy ends TLS)."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.agent_envoy import AgentEnvoyProcess, AgentEnvoyRunner, AgentIdentity
from gatehouse.agent_keys import certificate_node, certificate_request
from gatehouse.agent_tunnels import (
    TUNNEL_ALPN,
    TUNNEL_CONNECTIONS,
    agent_name,
    gateway_agent_suffix,
    tunnel_server_name,
)
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.gateway_identity import node_id
from gatehouse.v1 import tunnel_pb2
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.incremental import IncrementalGateway
from gateway_xds.ir.agent_tunnels import AgentTunnels
from gateway_xds.ir.backends import Backend
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.ir.service_route import ServiceRoute
from gateway_xds.ir.tls import ServerCertificate, TLSPort, TLSSecret
from gateway_xds.server.server import XdsServer, build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.reporters import RecordingReporter
from gateway_xds.testing.upstream import Upstream
from services.common.internal_ca import GatewayTunnelIdentities, InternalCA
from tests.support.certs import self_signed
from tests.support.https import fetch_tls
from tests.support.real import require_real

pytestmark = pytest.mark.real

GATEWAY, SERVICE, OTHER_SERVICE = "gw-tun", "svc-laptop", "svc-other"
# The gateway's public HTTPS names (one wildcard certificate) when it has an HTTPS port.
PUBLIC_DOMAIN = "nat.test"
TUNNEL_PORT, HTTPS_PORT = "tunnel port", "https port"
HIDDEN = "127.0.0.3"
DEADLINE_SECONDS = 20.0
BACK_WITHIN_SECONDS = 2.0
_revisions = itertools.count(1)


@dataclass
class Tunnels:
    ca: InternalCA
    directory: Path
    binary: Path
    cache: SnapshotCache
    reporter: RecordingReporter
    server: XdsServer
    gateway: IncrementalGateway
    envoy: EnvoyProcess
    http_port: int
    tunnel_port: int
    # Where agents dial: the tunnel port, or the HTTPS port (then `public_ca` signed its certificate).
    agent_port: int
    replica: Upstream
    public_ca: str = ""
    agents: list[AgentEnvoyRunner] = field(default_factory=list)

    async def publish(self, wait: bool = True) -> None:
        revision = next(_revisions)
        self.cache.set_snapshot(GATEWAY, self.gateway.commit(revision))
        if not wait:
            return
        node = node_id(GATEWAY, 0)
        async with asyncio.timeout(DEADLINE_SECONDS):
            await self.reporter.wait_for(
                lambda r: r.kind == "acked" and r.node_id == node and r.revision == revision
            )

    async def agent(
        self,
        service_id: str = SERVICE,
        gateway_id: str = GATEWAY,
        claimed_name: str | None = None,
        project: str = "main",
        replica: Upstream | None = None,
    ) -> AgentEnvoyRunner:
        """An agent of `project` with a certificate for `service_id` on `gateway_id` (as the server
        would issue it), opening tunnels that say they are `claimed_name`'s (its certificate's own name
        by default), serving `replica` (the fixture's by default)."""
        identity = AgentIdentity(project, service_id, f"replica-{len(self.agents)}", home=self.directory)
        request = certificate_request(identity.key_file.read_bytes(), "replica")
        certificate = self.ca.sign_agent_request(request, service_id, gateway_id)
        tunnel = tunnel_pb2.AgentTunnel(
            certificate=certificate,
            ca=self.ca.certificate_pem,
            gateway_id=GATEWAY,
            host="127.0.0.1",
            port=self.agent_port,
            agent_name=claimed_name or agent_name(service_id, gateway_id),
            node=certificate_node(certificate),
        )
        target = (HIDDEN, (replica or self.replica).port)
        runner = AgentEnvoyRunner(str(self.binary), identity, project, target, say=print)
        self.agents.append(runner)
        await runner.apply(tunnel)
        return runner

    def get(self, path: str = "/") -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as error:
            return 0, repr(error)
        finally:
            connection.close()

    async def eventually(self, expected: tuple[int, str], within: float = DEADLINE_SECONDS) -> float:
        """Seconds until GET / answers `expected`."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        last: tuple[int, str] = (0, "")
        while loop.time() - start < within:
            last = await asyncio.to_thread(self.get)
            if last == expected:
                return loop.time() - start
            await asyncio.sleep(0.02)
        logs = "\n".join(a.envoy.log_tail(20) for a in self.agents if a.envoy is not None)
        pytest.fail(
            f"expected {expected}, last {last}; gateway:\n{self.envoy.log()[-3000:]}\nagents:\n{logs}"
        )

    def tunnels_accepted(self) -> int:
        return self.envoy.stats("reverse_tunnel.handshake.").get("reverse_tunnel.handshake.accepted", 0)

    def connections_to(self, port: int) -> int:
        stat = f"listener.127.0.0.1_{port}.downstream_cx_total"
        return self.envoy.stats(stat).get(stat, 0)

    async def until_tunnels(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_SECONDS
        while self.tunnels_accepted() < count and loop.time() < deadline:
            await asyncio.sleep(0.05)


def route(name: str, service_id: str, domain: str = "*") -> ServiceRoute:
    backend = Backend(name, agent_name=agent_name(service_id, GATEWAY))
    return ServiceRoute("port-app", VirtualHost(name, (domain,), name), backend)


@pytest.fixture
def replica() -> Iterator[Upstream]:
    with Upstream(b"hello from behind NAT", host=HIDDEN) as upstream:
        yield upstream


@pytest.fixture(params=[TUNNEL_PORT, HTTPS_PORT])
async def tunnels(
    request: pytest.FixtureRequest, tmp_path: Path, replica: Upstream
) -> AsyncIterator[Tunnels]:
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    ca = InternalCA.create()
    cache, reporter = SnapshotCache(), RecordingReporter()
    server = build_xds_server(cache, NodeIdAuthorizer(), reporter, "127.0.0.1:0")
    await server.start()
    http_port, tunnel_port, https_port = free_port(), free_port(), free_port()
    gateway = IncrementalGateway(GATEWAY)
    public_ca, tls = "", None
    if request.param == HTTPS_PORT:
        names = [f"*.{PUBLIC_DOMAIN}"]
        certificate, key = self_signed(tmp_path, "public", dns_names=names, addresses=())
        public_ca = certificate.read_text()
        assert gateway.put_secret(TLSSecret("cert-public", public_ca, key.read_text())) == []
        tls = TLSPort("https", https_port, (ServerCertificate("cert-public", tuple(names)),))
    gateway.set_listeners([HTTPListener("port-app", "127.0.0.1", http_port, tls=tls)])
    chain, key_pem = GatewayTunnelIdentities(ca, tunnel_port).certificate(GATEWAY)
    tunnels = AgentTunnels(
        "127.0.0.1",
        tunnel_port,
        gateway_agent_suffix(GATEWAY),
        tunnel_server_name(GATEWAY),
        chain,
        key_pem,
        ca.certificate_pem.decode(),
    )
    assert gateway.set_agent_tunnels(tunnels) == []
    gateway.put_service("laptop", route("svc_main_laptop", SERVICE))
    params = BootstrapParams(GATEWAY, 0, "127.0.0.1", server.port, admin_port=free_port())
    envoy = EnvoyProcess(binary, tmp_path / "gateway", render_bootstrap(params), concurrency=2)
    agent_port = https_port if tls is not None else tunnel_port
    harness = Tunnels(
        ca, tmp_path, binary, cache, reporter, server, gateway, envoy, http_port, tunnel_port, agent_port,
        replica, public_ca,
    )  # fmt: skip
    # Configured before it starts, as a provisioned gateway's Envoy finds it.
    await harness.publish(wait=False)
    envoy.start()
    try:
        await asyncio.to_thread(envoy.wait_ready)
        await harness.publish()
        yield harness
    finally:
        # The gateway first: its tunnels gone, an agent's Envoy has nothing left to drain.
        envoy.stop()
        for agent in harness.agents:
            await agent.stop()
        await server.stop(grace=None)


async def test_requests_reach_a_replica_behind_nat_only_through_its_agents_tunnels(tunnels: Tunnels) -> None:
    # No agent yet: the gateway has no way to the replica.
    status, _ = await asyncio.to_thread(tunnels.get)
    assert status == 503
    await tunnels.agent()
    await tunnels.eventually((200, "hello from behind NAT"))
    # Every one of the gateway's workers has a tunnel (exact balance): no request finds none.
    answers = [await asyncio.to_thread(tunnels.get) for _ in range(40)]
    assert {status for status, _ in answers} == {200}
    # The gateway ran a TLS session of its own over the tunnel, with the agent's Envoy.
    envoy = tunnels.agents[0].envoy
    assert envoy is not None
    stats = await envoy.stats(*(f"listener.127.0.0.1_{n}.ssl.handshake" for n in range(4)))
    assert sum(stats.values()) >= 1, stats


async def test_websockets_cross_the_tunnel(tunnels: Tunnels) -> None:
    await tunnels.agent()
    await tunnels.eventually((200, "hello from behind NAT"))
    payload = b"\x81\x05hello" * 100
    assert await asyncio.to_thread(_websocket_echo, tunnels.http_port, payload) == payload


def _websocket_echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            b"GET /chat HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        connection.sendall(payload)
        echoed = head.partition(b"\r\n\r\n")[2]
        while len(echoed) < len(payload):
            chunk = connection.recv(4096)
            assert chunk, echoed
            echoed += chunk
        return echoed


async def test_an_agent_serves_only_the_service_and_gateway_its_certificate_names(tunnels: Tunnels) -> None:
    tunnels.gateway.put_service("other", route("svc_other_other", OTHER_SERVICE))
    await tunnels.publish()
    # Another gateway's agent: refused at the TLS handshake (its name is not of this gateway).
    await tunnels.agent(SERVICE, gateway_id="gw-elsewhere")
    # Another project's agent (of its own service) claiming this one's tunnels: refused at the tunnel
    # handshake.
    await tunnels.agent(OTHER_SERVICE, claimed_name=agent_name(SERVICE, GATEWAY), project="other")
    # The other service's own agent: accepted, and it serves the other service only.
    await tunnels.agent(OTHER_SERVICE, project="other")
    await tunnels.until_tunnels(TUNNEL_CONNECTIONS)
    await asyncio.sleep(0.5)
    assert tunnels.tunnels_accepted() == TUNNEL_CONNECTIONS  # the one valid agent's tunnels only
    validation = tunnels.envoy.stats("reverse_tunnel.handshake.validation_failed")
    assert validation.get("reverse_tunnel.handshake.validation_failed", 0) >= 1
    answers = [await asyncio.to_thread(tunnels.get) for _ in range(10)]
    assert {status for status, _ in answers} == {503}


@pytest.mark.parametrize("tunnels", [HTTPS_PORT], indirect=True)
async def test_https_requests_reach_each_services_replica_while_tunnels_share_the_port(
    tunnels: Tunnels,
) -> None:
    other_name = f"other.{PUBLIC_DOMAIN}"
    tunnels.gateway.put_service("other", route("svc_other_other", OTHER_SERVICE, domain=other_name))
    await tunnels.publish()
    with Upstream(b"hello from the other replica", host=HIDDEN) as other:
        await tunnels.agent()
        await tunnels.agent(OTHER_SERVICE, project="other", replica=other)
        await tunnels.until_tunnels(2 * TUNNEL_CONNECTIONS)
        # Every tunnel came over the HTTPS port: the tunnel port saw no connection.
        assert tunnels.connections_to(tunnels.agent_port) >= 2 * TUNNEL_CONNECTIONS
        assert tunnels.connections_to(tunnels.tunnel_port) == 0
        expected = {
            f"laptop.{PUBLIC_DOMAIN}": "hello from behind NAT",
            other_name: "hello from the other replica",
        }
        for _ in range(10):
            for name, body in expected.items():
                answer = await asyncio.to_thread(fetch_tls, tunnels.agent_port, name, tunnels.public_ca)
                assert (answer.status, answer.body) == (200, body), name
    assert tunnels.tunnels_accepted() == 2 * TUNNEL_CONNECTIONS


@pytest.mark.parametrize("tunnels", [HTTPS_PORT], indirect=True)
async def test_the_tunnels_name_on_the_https_port_takes_no_client_without_an_agents_certificate(
    tunnels: Tunnels,
) -> None:
    await tunnels.agent()
    await tunnels.until_tunnels(TUNNEL_CONNECTIONS)
    name = tunnel_server_name(GATEWAY)
    # With the tunnels' ALPN protocol: their filter chain, which asks for a certificate and gets none.
    refused = await asyncio.to_thread(_tunnel_handshake, tunnels.agent_port, name, [TUNNEL_ALPN])
    assert refused.startswith("refused"), refused
    no_certificate = f"listener.127.0.0.1_{tunnels.agent_port}.ssl.fail_verify_no_cert"
    assert tunnels.envoy.stats(no_certificate).get(no_certificate, 0) >= 1
    # As a browser would (h2, http/1.1): no filter chain serves the name, the connection is closed.
    closed = await asyncio.to_thread(_tunnel_handshake, tunnels.agent_port, name, ["h2", "http/1.1"])
    assert closed.startswith("refused"), closed
    await asyncio.sleep(0.5)
    assert tunnels.tunnels_accepted() == TUNNEL_CONNECTIONS  # the agent's, and no other
    assert await asyncio.to_thread(tunnels.get) == (200, "hello from behind NAT")


def _tunnel_handshake(port: int, server_name: str, alpn: list[str]) -> str:
    """A TLS client without a certificate that says `server_name` and offers `alpn`, then sends a
    reverse tunnel handshake: "refused: …" unless the gateway answers it."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as connection,
        ):
            connection.sendall(
                b"GET /reverse_connections/request HTTP/1.1\r\nHost: gateway\r\n"
                b"x-envoy-reverse-tunnel-node-id: 01\r\nx-envoy-reverse-tunnel-cluster-id: "
                + agent_name(SERVICE, GATEWAY).encode()
                + b"\r\nContent-Length: 0\r\n\r\n"
            )
            answer = connection.recv(4096)
    except (OSError, ssl.SSLError) as error:
        return f"refused: {error!r}"
    return "refused: closed at once" if not answer else answer.decode(errors="replace")


async def test_traffic_keeps_flowing_with_the_control_plane_down(tunnels: Tunnels) -> None:
    agent = await tunnels.agent()
    await tunnels.eventually((200, "hello from behind NAT"))
    await tunnels.server.stop(grace=None)
    for _ in range(20):
        assert await asyncio.to_thread(tunnels.get) == (200, "hello from behind NAT")
    # The agent's Envoy starts again on its own bootstrap, the control plane still away.
    envoy = agent.envoy
    assert envoy is not None
    await envoy.stop()
    envoy.start()
    back = await tunnels.eventually((200, "hello from behind NAT"))
    assert back < BACK_WITHIN_SECONDS


async def test_agents_are_back_within_two_seconds_of_a_gateway_envoy_restart(tunnels: Tunnels) -> None:
    await tunnels.agent()
    await tunnels.eventually((200, "hello from behind NAT"))
    await asyncio.sleep(1.0)  # an agent that has been serving, not one still opening its tunnels
    tunnels.envoy.stop()
    tunnels.envoy.start()
    await asyncio.to_thread(tunnels.envoy.wait_ready)
    # From the moment the gateway's Envoy has its configuration again (gateway_xds serves it).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while b"LIVE" not in await asyncio.to_thread(_server_info, tunnels.envoy) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    back = await tunnels.eventually((200, "hello from behind NAT"))
    assert back < BACK_WITHIN_SECONDS, f"back after {back:.2f}s"


def _server_info(envoy: EnvoyProcess) -> bytes:
    try:
        return envoy.admin("/server_info", timeout=1.0)
    except OSError:
        return b""


async def test_two_agents_share_the_load_and_one_restarts_without_a_failed_request(tunnels: Tunnels) -> None:
    first, second = await tunnels.agent(), await tunnels.agent()
    await tunnels.eventually((200, "hello from behind NAT"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while tunnels.tunnels_accepted() < 2 * TUNNEL_CONNECTIONS and loop.time() < deadline:
        await asyncio.sleep(0.05)
    failures: list[tuple[int, str]] = []
    served = itertools.count()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            answer = tunnels.get()
            if answer != (200, "hello from behind NAT"):
                failures.append(answer)
            next(served)

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        await asyncio.sleep(1.0)
        carried = [await _requests_through(agent) for agent in (first, second)]
        assert all(count > 0 for count in carried), carried  # both agents carry requests
        envoy = first.envoy
        assert envoy is not None
        await envoy.stop()  # as `gatehouse agent` stops: drained first
        envoy.start()
        await asyncio.sleep(2.0)
        assert await _requests_through(first) > 0
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == [], f"{len(failures)} of {next(served)} failed: {failures[:5]}"


async def _requests_through(agent: AgentEnvoyRunner) -> int:
    envoy: AgentEnvoyProcess | None = agent.envoy
    assert envoy is not None
    return (await envoy.stats("http.tunnels.downstream_rq_total")).get("http.tunnels.downstream_rq_total", 0)

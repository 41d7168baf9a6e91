"""`gatehouse server` (all four services in one process) and each service as its own process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
from prometheus_client.registry import Collector

from gatehouse.client.connection import Stubs
from gatehouse.leadership import Leadership
from gatehouse.private_files import make_private_directory
from gatehouse.v1 import registry_pb2
from gateway_xds.app import XdsApp
from gateway_xds.observe.dashboard import dashboard_view
from gateway_xds.server.health_port import start_health_port
from gateway_xds.shared import redis as shared_redis
from services.certificates.api import registrations as certificate_registrations
from services.certificates.app import build_certificates
from services.certificates.metrics import CertificateCollector
from services.common.auth import Authenticator
from services.common.crypto import Cipher, configured_key
from services.common.grpc_server import bind_server, start_server
from services.common.internal_ca import GatewayTunnelIdentities, InternalCA, xds_server_credentials
from services.common.metrics_endpoint import MetricsAddress, MetricsEndpoint, bind_metrics_socket
from services.common.private_home import make_home_private
from services.common.remote_auth import RegistryAuthenticator
from services.common.settings import Settings
from services.provisioner.app import build_provisioner, public_xds_endpoint
from services.provisioner.app import registrations as provisioner_registrations
from services.provisioner.hosts.identity import JoinEndpoint
from services.provisioner.join import JOIN_TOKEN_KEY, JoinServer, JoinSetup, JoinTokens, RegistryRedemptions
from services.provisioner.reconciler import Provisioner
from services.registry.app import Registry

log = logging.getLogger("gatehouse")

# How long a process waits for the registry to answer at start (they may start together).
REGISTRY_WAIT_SECONDS = 60.0


def configure_logging() -> None:
    level = os.environ.get("GATEHOUSE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("sqlalchemy", "aiosqlite", "alembic", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def local_address(host: str, port: int) -> str:
    """Where this machine's own clients reach a server listening on host:port."""
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "::", "") else f"{host}:{port}"


def system_token(settings: Settings) -> str:
    token = os.environ.get("GATEHOUSE_SYSTEM_TOKEN")
    if token:
        return token
    path = settings.server_dir / "system-token"
    try:
        return path.read_text().strip()
    except OSError:
        raise SystemExit(
            f"error: no token for Gatehouse's services: start the registry first (it writes {path}) "
            "or set GATEHOUSE_SYSTEM_TOKEN"
        ) from None


async def _until_stopped(tasks: list[Coroutine[Any, Any, Any]], cleanup: list[Awaitable[Any]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = [asyncio.create_task(task) for task in tasks]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in running:
        task.cancel()
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception() is not None:
            log.error("a service stopped: %r", task.exception())
    await asyncio.gather(*running, return_exceptions=True)
    stopper.cancel()
    for item in cleanup:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await item


def _metrics_socket(settings: Settings) -> socket.socket:
    return bind_metrics_socket(MetricsAddress(settings.metrics_host, settings.metrics_port))


async def _start_metrics(
    listening: socket.socket,
    authenticator: Authenticator,
    collectors: list[Collector],
    xds: XdsApp | None = None,
) -> MetricsEndpoint:
    """The process's metrics; with `xds`, the dashboard too (it shows what gateway_xds holds)."""
    dashboard = None
    if xds is not None:
        dashboard = functools.partial(dashboard_view, xds.provider.mirror, xds.envoy_stats)
    endpoint = MetricsEndpoint(authenticator, collectors, dashboard)
    await endpoint.start(listening)
    return endpoint


def _metrics_url(settings: Settings, endpoint: MetricsEndpoint) -> str:
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "::", "") else settings.metrics_host
    return f"http://{_url_host(host)}:{endpoint.port}/metrics"


def _write_state(settings: Settings, **state: object) -> None:
    path = settings.server_dir / "server.json"
    make_private_directory(path.parent)
    path.write_text(json.dumps({"pid": os.getpid(), **state}, indent=2) + "\n")


async def serve_all(settings: Settings) -> None:
    """The embedded default: registry, provisioner, certificates and gateway_xds on one loop."""
    make_home_private(settings.home)
    metrics_socket = _metrics_socket(settings)
    registry = await Registry.start(settings)
    # The internal clients need the API's port, so the server is bound before anything is served.
    server, api_port = bind_server(registry.authenticator, settings.api_address)
    client_address = local_address(settings.api_host, api_port)
    await registry.bootstrap(settings, client_address)
    stubs = Stubs.connect(client_address, system_token(settings))
    # Envoys reach gateway_xds over mTLS with client certificates of this CA.
    ca = await registry.internal_ca()
    xds = _xds_app(settings, stubs, ca)
    join_server, join = await _start_join(settings, ca, stubs)
    provisioner = build_provisioner(settings, stubs, xds.port, ca, join)
    join_server.renewable = _renewable(provisioner)
    certificates = build_certificates(stubs)
    registrations = (
        registry.registrations()
        + provisioner_registrations(provisioner, stubs, settings, ca)
        + certificate_registrations(certificates)
    )
    await start_server(server, registrations)
    endpoint = await _start_metrics(
        metrics_socket,
        registry.authenticator,
        [xds.collector, CertificateCollector(certificates.mirror)],
        xds,
    )
    _write_state(settings, api=client_address, xds_port=xds.port, metrics_port=endpoint.port)
    print(
        f"Gatehouse is running: API {settings.api_host}:{api_port}, xDS {settings.xds_host}:{xds.port}, "
        f"metrics {_metrics_url(settings, endpoint)}, home {settings.home}. "
        f"The CLI config is {settings.home / 'config.yml'}.",
        flush=True,
    )
    await _until_stopped(
        [
            registry.run(settings),
            xds.run(),
            provisioner.run(Leadership(stubs, "provisioner")),
            certificates.run(Leadership(stubs, "certificates")),
        ],
        [server.stop(1.0), endpoint.stop(), join_server.stop(), stubs.close(), registry.close()],
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _internal_ca(settings: Settings, stubs: Stubs) -> InternalCA:
    """The CA every process shares, from the registry (which makes it on first start), its key
    encrypted with the registry's key: `GATEHOUSE_ENCRYPTION_KEY` (or, on the registry's machine, its
    key file)."""
    cipher = Cipher(configured_key(settings.server_dir / "encryption.key"))
    deadline = asyncio.get_running_loop().time() + REGISTRY_WAIT_SECONDS
    while True:
        try:
            sealed = await stubs.control_plane.GetInternalCA(registry_pb2.GetInternalCARequest(), timeout=5)
            return InternalCA.unsealed(sealed.certificate_pem, sealed.key_encrypted, cipher)
        except grpc.aio.AioRpcError as error:
            waiting = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)
            if not waiting or asyncio.get_running_loop().time() > deadline:
                raise SystemExit(
                    f"error: cannot get the internal CA from the registry: {error.details()}"
                ) from None
            await asyncio.sleep(0.5)


def _xds_app(settings: Settings, stubs: Stubs, ca: InternalCA) -> XdsApp:
    """gateway_xds over TLS requiring a client certificate of `ca` naming the caller's gateway."""
    public_host = public_xds_endpoint(settings, settings.xds_port).host
    credentials = xds_server_credentials(ca, [settings.xds_host, public_host])
    return XdsApp.build(
        stubs,
        f"{settings.xds_host}:{settings.xds_port}",
        credentials=credentials,
        own_process=True,
        tunnels=GatewayTunnelIdentities(ca, settings.agent_tunnel_port),
        shared=shared_redis.from_env(),
    )


async def _start_join(settings: Settings, ca: InternalCA, stubs: Stubs) -> tuple[JoinServer, JoinSetup]:
    """Where gateway hosts trade the join token from their startup data for a client certificate,
    and renew it: on the xDS host, at `GATEHOUSE_JOIN_PORT` (any copy of the provisioner)."""
    public_host = public_xds_endpoint(settings, settings.xds_port).host
    tokens = JoinTokens(ca.derived_key(JOIN_TOKEN_KEY), RegistryRedemptions(stubs))
    join_server = JoinServer(ca, tokens, [settings.xds_host, public_host])
    await join_server.start(settings.xds_host, settings.join_port)
    join_url = f"https://{_url_host(public_host)}:{join_server.port}"
    return join_server, JoinSetup(tokens, JoinEndpoint(join_url, ca.certificate_pem.decode()))


def _renewable(provisioner: Provisioner) -> Callable[[str], bool]:
    """A host renews its certificate only while its gateway exists."""
    return lambda gateway_id: gateway_id in provisioner.mirror.gateways


async def serve_one(settings: Settings, role: str, registry_address: str | None) -> None:
    """One service as its own process (docker-compose runs them like this)."""
    make_home_private(settings.home)
    metrics_socket = _metrics_socket(settings)
    if role == "registry":
        registry = await Registry.start(settings)
        server, port = bind_server(registry.authenticator, settings.api_address)
        await registry.bootstrap(settings, local_address(settings.api_host, port))
        await start_server(server, registry.registrations())
        endpoint = await _start_metrics(metrics_socket, registry.authenticator, [])
        print(
            f"Gatehouse registry is running on {settings.api_host}:{port}, "
            f"metrics {_metrics_url(settings, endpoint)}",
            flush=True,
        )
        await _until_stopped([registry.run(settings)], [server.stop(1.0), endpoint.stop(), registry.close()])
        return
    address = registry_address or os.environ.get("GATEHOUSE_REGISTRY") or settings.api_address
    stubs = Stubs.connect(address, system_token(settings))
    authenticator: Authenticator = RegistryAuthenticator(address)
    # gateway_xds and the provisioner share the internal CA, as in `gatehouse server`: Envoys connect
    # over mTLS, and hosts join at the provisioner (which issues their tokens).
    if role == "xds":
        xds = _xds_app(settings, stubs, await _internal_ca(settings, stubs))
        endpoint = await _start_metrics(metrics_socket, authenticator, [xds.collector], xds)
        health_cleanup: list[Awaitable[Any]] = []
        if settings.xds_health_port:
            health_address = f"{settings.xds_host}:{settings.xds_health_port}"
            health_server = await start_health_port(xds.server.health, health_address)
            health_cleanup.append(health_server.stop(None))
        print(
            f"Gatehouse xDS is running on {settings.xds_host}:{xds.port} (mTLS), "
            f"metrics {_metrics_url(settings, endpoint)}",
            flush=True,
        )
        await _until_stopped([xds.run()], [endpoint.stop(), stubs.close(), *health_cleanup])
        return
    cleanup: list[Awaitable[Any]] = []
    if role == "provisioner":
        ca = await _internal_ca(settings, stubs)
        join_server, join = await _start_join(settings, ca, stubs)
        cleanup.append(join_server.stop())
        provisioner = build_provisioner(settings, stubs, settings.xds_port, ca, join)
        join_server.renewable = _renewable(provisioner)
        tasks: list[Coroutine[Any, Any, Any]] = [provisioner.run(Leadership(stubs, "provisioner"))]
        extra = provisioner_registrations(provisioner, stubs, settings, ca)
        collectors: list[Collector] = []
    else:
        certificates = build_certificates(stubs)
        tasks = [certificates.run(Leadership(stubs, "certificates"))]
        extra = certificate_registrations(certificates)
        collectors = [CertificateCollector(certificates.mirror)]
    server, port = bind_server(authenticator, settings.api_address)
    await start_server(server, extra)
    endpoint = await _start_metrics(metrics_socket, authenticator, collectors)
    print(
        f"Gatehouse {role} is running on {settings.api_host}:{port}, "
        f"metrics {_metrics_url(settings, endpoint)}",
        flush=True,
    )
    await _until_stopped(tasks, [server.stop(1.0), endpoint.stop(), *cleanup, stubs.close()])

"""Each process's HTTP port for Prometheus (`/metrics`), and the web dashboard (`/`) where the process
runs gateway_xds (`gatehouse server`, `gatehouse xds`).

Every request needs `Authorization: Bearer <token>` (the API's tokens): a server admin (or
Gatehouse's system token) reads every series; a project member reads only the series labelled with
a project of theirs, so names of other projects' gateways and services never reach them. The port
listens on 127.0.0.1 unless `GATEHOUSE_METRICS_HOST` says otherwise.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gatehouse import metrics
from services.common import dashboard as dashboard_files
from services.common.auth import Authenticator, Principal, bearer_token
from services.common.errors import ApiError

log = logging.getLogger(__name__)

PRINCIPAL_KEY: web.AppKey[Callable[[web.Request], Awaitable[Principal]]] = web.AppKey("principal_of")
PAGE_FILES = {
    "/": ("index.html", "text/html"),
    "/dashboard.js": ("dashboard.js", "text/javascript"),
    "/dashboard.css": ("dashboard.css", "text/css"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# What the dashboard shows to a viewer of `projects` (None: every project).
DashboardView = Callable[[frozenset[str] | None], dict[str, Any]]


@dataclass(frozen=True)
class MetricsAddress:
    host: str
    port: int


def bind_metrics_socket(address: MetricsAddress) -> socket.socket:
    """The metrics port, listening; one line and exit when it cannot be had."""
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, sockaddr = infos[0]
        listening = socket.socket(family, kind, proto)
    except OSError as error:
        raise SystemExit(f"error: cannot serve metrics on {address.host}:{address.port}: {error}") from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(sockaddr)
        listening.listen(128)
    except OSError as error:
        listening.close()
        raise SystemExit(
            f"error: cannot serve metrics on {address.host}:{address.port}: {error.strerror} "
            f"(set {metrics.PORT_ENV} or --metrics-port; 0 picks a free port)"
        ) from None
    listening.setblocking(False)
    return listening


class _Filtered:
    """A registry's metrics with only the samples labelled with one of `projects`."""

    def __init__(self, source: CollectorRegistry, projects: frozenset[str]) -> None:
        self._source = source
        self._projects = projects

    def collect(self) -> Iterable[Metric]:
        for metric in self._source.collect():
            samples = [s for s in metric.samples if s.labels.get("project") in self._projects]
            if samples:
                metric.samples = samples
                yield metric


def exposition(registries: Iterable[CollectorRegistry], principal: Principal) -> bytes:
    """The text format of every registry's metrics that `principal` may read."""
    out = []
    for registry in registries:
        if principal.admin or principal.system:
            out.append(generate_latest(registry))
            continue
        view = CollectorRegistry(auto_describe=False)
        view.register(_Filtered(registry, frozenset(principal.projects)))
        out.append(generate_latest(view))
    return b"".join(out)


class MetricsEndpoint:
    """`/metrics` (and whatever routes `extend` adds) on an aiohttp server of its own."""

    def __init__(
        self,
        authenticator: Authenticator,
        collectors: Iterable[Collector] = (),
        dashboard: DashboardView | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._dashboard = dashboard
        self._own = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            self._own.register(collector)
        self.app = web.Application()
        self.app[PRINCIPAL_KEY] = self.principal_of
        self.app.router.add_get("/metrics", self._metrics)
        if dashboard is not None:
            self.app.router.add_get("/api/dashboard", self._dashboard_data)
            for path in PAGE_FILES:
                self.app.router.add_get(path, self._page)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def registries(self) -> tuple[CollectorRegistry, ...]:
        return (REGISTRY, self._own)

    async def principal_of(self, request: web.Request) -> Principal:
        """The caller, or an HTTP error saying what is missing (401) or not allowed (403)."""
        try:
            token = bearer_token({"authorization": request.headers.get("Authorization", "")})
            return await self._authenticator.authenticate(token)
        except ApiError as error:
            raise web.HTTPUnauthorized(
                text=error.message + "\n", headers={"WWW-Authenticate": 'Bearer realm="gatehouse"'}
            ) from None

    async def _metrics(self, request: web.Request) -> web.Response:
        principal = await self.principal_of(request)
        body = exposition(self.registries, principal)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _page(self, request: web.Request) -> web.Response:
        name, content_type = PAGE_FILES[request.path]
        body = resources.files(dashboard_files).joinpath(name).read_bytes()
        return web.Response(body=body, content_type=content_type, headers=SECURITY_HEADERS)

    async def _dashboard_data(self, request: web.Request) -> web.Response:
        principal = await self.principal_of(request)
        assert self._dashboard is not None
        projects = None if principal.admin or principal.system else frozenset(principal.projects)
        return web.json_response(self._dashboard(projects), headers=SECURITY_HEADERS)

    async def start(self, listening: socket.socket) -> None:
        """Serve on a socket bound already (bind_metrics_socket), so that a port in use stops the
        process before it starts anything else."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, listening).start()
        self.port = listening.getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

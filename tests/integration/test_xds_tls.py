"""TLS on a real Envoy configured over xDS: certificates over SDS chosen by SNI, HTTP redirected to
HTTPS except ACME answers, renewals and new certificates applied without dropping a connection."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.gateway_identity import node_id
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.incremental import IncrementalGateway
from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.listeners import HTTPListener, RouteTable
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.ir.service_route import ServiceRoute
from gateway_xds.ir.tls import AcmeChallenge, ServerCertificate, TLSPort, TLSSecret
from gateway_xds.server.server import XdsServer, build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.reporters import RecordingReporter
from gateway_xds.testing.upstream import Upstream
from tests.support.certs import self_signed
from tests.support.https import SniConnection, TlsAnswer, fetch_tls
from tests.support.real import require_real

pytestmark = pytest.mark.real

DEADLINE_SECONDS = 20.0
APP, WILDCARD = "app.tls.test", "*.w.tls.test"
_revisions = itertools.count(1)


@dataclass
class Certificate:
    secret: TLSSecret
    pem: str
    serial: int


def certificate(directory: Path, secret: str, name: str, stem: str) -> Certificate:
    from cryptography import x509

    cert_path, key_path = self_signed(directory, stem, dns_names=[name], addresses=())
    pem = cert_path.read_text()
    serial = x509.load_pem_x509_certificate(pem.encode()).serial_number
    return Certificate(TLSSecret(secret, pem, key_path.read_text()), pem, serial)


@dataclass
class TlsGateway:
    gateway: IncrementalGateway
    cache: SnapshotCache
    reporter: RecordingReporter
    envoy: EnvoyProcess
    node_id: str
    http_port: int
    https_port: int
    directory: Path
    certificates: dict[str, Certificate]
    upstream: Upstream

    @property
    def trusted(self) -> str:
        return "".join(c.pem for c in self.certificates.values())

    def listener(self) -> HTTPListener:
        chains = (
            ServerCertificate("cert-app", (APP,)),
            *(
                ServerCertificate(name, (f"{name}.tls.test",))
                for name in self.certificates
                if name.startswith("x")
            ),
            ServerCertificate("cert-w", (WILDCARD,)),
        )
        return HTTPListener(
            "http", "127.0.0.1", self.http_port, route_table=RouteTable.PER_HOST,
            tls=TLSPort("https", self.https_port, chains),
        )  # fmt: skip

    async def publish(self, wait: bool = True) -> None:
        for cert in self.certificates.values():
            self.gateway.put_secret(cert.secret)
        self.gateway.set_listeners([self.listener()])
        revision = next(_revisions)
        self.cache.set_snapshot(self.gateway.gateway_id, self.gateway.commit(revision))
        if not wait:
            return
        async with asyncio.timeout(DEADLINE_SECONDS):
            await self.reporter.wait_for(
                lambda r: r.kind == "acked" and r.node_id == self.node_id and r.revision == revision
            )

    def renew(self, secret: str, name: str) -> Certificate:
        stem = f"{secret}-{len(list(self.directory.glob(f'{secret}-*.crt')))}"
        fresh = certificate(self.directory, secret, name, stem)
        self.certificates[secret] = fresh
        return fresh

    def https(self, name: str, path: str = "/") -> TlsAnswer:
        return fetch_tls(self.https_port, name, self.trusted, path)

    def http(
        self, host: str, path: str = "/", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
        try:
            connection.request("GET", path, headers={"Host": host, **(headers or {})})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
        finally:
            connection.close()


def service(name: str, host: str, upstream: Upstream, **vhost: Any) -> ServiceRoute:
    virtual_host = dataclasses.replace(VirtualHost(name, (host,), name), **vhost)
    return ServiceRoute("http", virtual_host, Backend(name, (Endpoint("127.0.0.1", upstream.port),)))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(b"hello over tls") as server:
        yield server


@pytest.fixture(scope="module")
async def xds() -> AsyncIterator[tuple[SnapshotCache, RecordingReporter, XdsServer]]:
    cache, reporter = SnapshotCache(), RecordingReporter()
    server = build_xds_server(cache, NodeIdAuthorizer(), reporter, "127.0.0.1:0")
    await server.start()
    yield cache, reporter, server
    await server.stop(grace=None)


@pytest.fixture(scope="module", params=["DELTA_GRPC", "GRPC"], ids=["delta", "sotw"])
async def tls_gateway(
    xds: tuple[SnapshotCache, RecordingReporter, XdsServer],
    upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> AsyncIterator[TlsGateway]:
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    cache, reporter, server = xds
    gateway_id = f"gw-tls-{request.param.lower()}"
    directory = tmp_path_factory.mktemp("tls")
    params = BootstrapParams(
        gateway_id, 0, "127.0.0.1", server.port, admin_port=free_port(), api_type=request.param
    )
    envoy = EnvoyProcess(binary, directory / "envoy", render_bootstrap(params))
    incremental = IncrementalGateway(gateway_id)
    certificates = {
        "cert-app": certificate(directory, "cert-app", APP, "app-0"),
        "cert-w": certificate(directory, "cert-w", WILDCARD, "w-0"),
    }
    gateway = TlsGateway(
        incremental, cache, reporter, envoy, node_id(gateway_id, 0), free_port(), free_port(), directory,
        certificates, upstream,
    )  # fmt: skip
    incremental.put_service(
        "app", service("svc-app", APP, upstream, https_redirect=True, https_port=gateway.https_port)
    )
    incremental.put_service("web", service("svc-web", "web.w.tls.test", upstream))
    # Configured before it starts, as a provisioned gateway's Envoy finds it.
    await gateway.publish(wait=False)
    envoy.start()
    try:
        await asyncio.to_thread(envoy.wait_ready)
        await gateway.publish()
        yield gateway
    finally:
        envoy.stop()


async def eventually(check: Callable[[], object], expected: object, what: str, envoy: EnvoyProcess) -> object:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    last = None
    while loop.time() < deadline:
        last = await asyncio.to_thread(check)
        if last == expected:
            return last
        await asyncio.sleep(0.05)
    pytest.fail(f"{what}: expected {expected!r}, last got {last!r}; Envoy log:\n{envoy.log()[-3000:]}")


async def test_each_name_gets_its_certificate_by_sni(tls_gateway: TlsGateway) -> None:
    gateway = tls_gateway
    answer = await asyncio.to_thread(gateway.https, APP)
    assert (answer.status, answer.body) == (200, "hello over tls")
    assert answer.serial == gateway.certificates["cert-app"].serial
    wildcard = await asyncio.to_thread(gateway.https, "web.w.tls.test")
    assert wildcard.status == 200 and wildcard.serial == gateway.certificates["cert-w"].serial
    # A name no certificate covers: the connection is closed during the handshake.
    assert (await asyncio.to_thread(gateway.https, "other.tls.test")).status == 0


async def test_plain_http_redirects_to_https_except_acme_answers(tls_gateway: TlsGateway) -> None:
    gateway = tls_gateway
    status, headers, _ = await asyncio.to_thread(gateway.http, APP, "/some/path?q=1")
    assert status == 301
    assert headers["location"] == f"https://{APP}:{gateway.https_port}/some/path?q=1"
    # The client cannot claim to have used HTTPS.
    status, _, _ = await asyncio.to_thread(gateway.http, APP, "/", {"X-Forwarded-Proto": "https"})
    assert status == 301
    route = service("svc-app", APP, gateway.upstream, https_redirect=True, https_port=gateway.https_port)
    answer = AcmeChallenge("tok-Abc_1", "tok-Abc_1.thumbprint")
    challenged = dataclasses.replace(route.virtual_host, acme_challenges=(answer,))
    gateway.gateway.put_service("app", dataclasses.replace(route, virtual_host=challenged))
    await gateway.publish()
    status, headers, body = await asyncio.to_thread(
        gateway.http, APP, "/.well-known/acme-challenge/tok-Abc_1"
    )
    assert (status, body, headers["content-type"]) == (200, "tok-Abc_1.thumbprint", "text/plain")
    # Other challenge paths are not redirected either; they reach the service.
    status, _, _ = await asyncio.to_thread(gateway.http, APP, "/.well-known/acme-challenge/unknown")
    assert status == 200
    # A service without a certificate yet is served over plain HTTP.
    status, _, body = await asyncio.to_thread(gateway.http, "web.w.tls.test")
    assert (status, body) == (200, "hello over tls")


async def test_a_renewal_is_served_without_touching_the_listener_or_open_connections(
    tls_gateway: TlsGateway,
) -> None:
    gateway = tls_gateway
    before = gateway.certificates["cert-app"].serial
    kept = SniConnection("127.0.0.1", gateway.https_port, APP, gateway.trusted)
    try:
        assert (await asyncio.to_thread(kept.get)).serial == before
        listeners = gateway.envoy.stats("listener_manager.listener_")
        renewed = gateway.renew("cert-app", APP)
        await gateway.publish()

        def serial() -> int | None:
            return fetch_tls(gateway.https_port, APP, gateway.trusted).serial

        await eventually(serial, renewed.serial, "the renewed certificate", gateway.envoy)
        # The connection opened before the renewal still serves requests, with its certificate.
        again = await asyncio.to_thread(kept.get)
        assert (again.status, again.serial) == (200, before)
        assert gateway.envoy.stats("listener_manager.listener_") == listeners
    finally:
        kept.close()


async def test_a_new_certificate_changes_filter_chains_in_place(tls_gateway: TlsGateway) -> None:
    gateway = tls_gateway
    kept = SniConnection("127.0.0.1", gateway.https_port, APP, gateway.trusted)
    try:
        assert (await asyncio.to_thread(kept.get)).status == 200
        updated = gateway.envoy.stats("listener_manager.listener_in_place_updated")
        name = f"x{next(_revisions)}"
        added = certificate(gateway.directory, name, f"{name}.tls.test", name)
        gateway.certificates[name] = added
        gateway.gateway.put_service(name, service(f"svc-{name}", f"{name}.tls.test", gateway.upstream))
        await gateway.publish()
        answer = await asyncio.to_thread(gateway.https, f"{name}.tls.test")
        assert (answer.status, answer.serial) == (200, added.serial)
        assert (await asyncio.to_thread(kept.get)).status == 200
        after = gateway.envoy.stats("listener_manager.listener_in_place_updated")
        assert sum(after.values()) == sum(updated.values()) + 1
    finally:
        kept.close()

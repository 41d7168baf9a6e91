"""RegistryProvider and certificates: keys fetched once per version for gateways that end TLS at Envoy,
a TLS port with one chain per certificate, redirects once a name is covered, ACME answers on :80."""

from __future__ import annotations

import asyncio
import datetime

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.message import Message

from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.cache.snapshot import Snapshot, diff_names
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.tls import TLSSecret
from gateway_xds.provider.build import backend_name, gateway_ir
from gateway_xds.provider.registry import RegistryProvider
from gateway_xds.provider.tls import ServedCertificate, secret_name
from gateway_xds.publish import snapshot_from_ir
from gateway_xds.resources import LISTENER, PUSH_ORDER, SCOPED_ROUTE, SECRET

PUT, DELETE = registry_pb2.EVENT_TYPE_PUT, registry_pb2.EVENT_TYPE_DELETE
HTTPS_PORT = 8443


def key_pair(*names: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


class FakeKeys:
    """The registry's GetKey: the key stored for each certificate id, and who asked for what."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.asked: list[str] = []
        self.failures = 0

    async def private_key(self, certificate_id: str) -> str:
        self.asked.append(certificate_id)
        if self.failures:
            self.failures -= 1
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
        return self.keys[certificate_id]


def gateway(certificate: str = "lets-encrypt") -> resources_pb2.Gateway:
    return resources_pb2.Gateway(
        id="gw-1",
        name="edge",
        spec=resources_pb2.GatewaySpec(
            domain="example.test", certificate=resources_pb2.Certificate(type=certificate)
        ),
        status=resources_pb2.GatewayStatus(listen_address="127.0.0.1", http_port=8080, https_port=HTTPS_PORT),
    )


def service(name: str, https: str = "true") -> resources_pb2.Service:
    spec = resources_pb2.ServiceSpec(gateway_id="gw-1", hostname=f"{name}.example.test", https=https)
    return resources_pb2.Service(id=f"svc-{name}", project="main", name=name, spec=spec)


class World:
    """A provider fed watch events, with the registry's certificates and keys beside it."""

    def __init__(self) -> None:
        self.keys = FakeKeys()
        self.cache = SnapshotCache()
        self.provider = RegistryProvider(None, self.cache, keys=self.keys)
        self.revision = 0
        self.served: dict[str, ServedCertificate] = {}

    async def send(self, *events: tuple[registry_pb2.EventType, Message]) -> None:
        batch = []
        for kind, obj in events:
            self.revision += 1
            event = registry_pb2.WatchEvent(revision=self.revision, type=kind)
            field = {
                resources_pb2.Gateway: "gateway",
                resources_pb2.Service: "service",
                resources_pb2.TlsCertificate: "tls_certificate",
                resources_pb2.AcmeChallenge: "acme_challenge",
            }[type(obj)]
            getattr(event, field).CopyFrom(obj)
            # The registry bumps an object's version on every write.
            getattr(event, field).resource_version = self.revision
            batch.append(event)
        await self.provider.on_change(self.provider.mirror.apply(batch))

    def issue(self, certificate_id: str, *names: str, state: str = "issued") -> resources_pb2.TlsCertificate:
        chain, key = key_pair(*names)
        self.keys.keys[certificate_id] = key
        if state == "issued":
            secret = TLSSecret(secret_name(certificate_id), chain, key)
            self.served[certificate_id] = ServedCertificate(certificate_id, names, 0, secret)
        return resources_pb2.TlsCertificate(
            id=certificate_id,
            gateway_id="gw-1",
            hostnames=names,
            issuer="lets-encrypt",
            state=state,
            chain_pem=chain,
        )

    def snapshot(self) -> Snapshot:
        snapshot = self.cache.get("gw-1")
        assert snapshot is not None
        return snapshot

    def assert_matches_whole_build(self) -> Snapshot:
        mirror = self.provider.mirror
        whole = gateway_ir(
            mirror.gateways["gw-1"],
            list(mirror.services.values()),
            {},
            certificates=self.served.values(),
            challenges=list(mirror.challenges.values()),
            credentials=self.provider.credentials,
        )
        current = self.snapshot()
        expected = snapshot_from_ir(whole, current.revision)
        assert {t: {n: r.version for n, r in current.entries(t).items()} for t in PUSH_ORDER} == {
            t: {n: r.version for n, r in expected.entries(t).items()} for t in PUSH_ORDER
        }
        return current


def changed(older: Snapshot, newer: Snapshot) -> dict[str, set[str]]:
    return {t: names for t in PUSH_ORDER if (names := diff_names(older, newer, t))}


def scope_of(name: str) -> str:
    return backend_name(service(name))


def redirects(snapshot: Snapshot, name: str) -> bool:
    scope = snapshot.get(SCOPED_ROUTE, scope_of(name))
    assert scope is not None
    routes = scope.message.route_configuration.virtual_hosts[0].routes  # type: ignore[attr-defined]
    return any(route.HasField("redirect") for route in routes)


async def test_an_issued_certificate_is_served_and_turns_on_the_redirect() -> None:
    world = World()
    await world.send((PUT, gateway()), (PUT, service("chat")), (PUT, service("plain", https="false")))
    before = world.assert_matches_whole_build()
    assert set(before.entries(LISTENER)) == {"http", "https"} and not redirects(before, "chat")
    await world.send((PUT, world.issue("c1", "chat.example.test")))
    after = world.assert_matches_whole_build()
    assert set(after.entries(SECRET)) == {"cert-c1"} and redirects(after, "chat")
    assert changed(before, after) == {
        SECRET: {"cert-c1"},
        LISTENER: {"https"},
        SCOPED_ROUTE: {scope_of("chat")},
    }
    # A wildcard covers the other service too, but `https: false` is never redirected.
    await world.send((PUT, world.issue("c2", "*.example.test")))
    assert not redirects(world.assert_matches_whole_build(), "plain")


async def test_keys_are_fetched_once_per_version_and_only_where_envoy_ends_tls() -> None:
    world = World()
    await world.send((PUT, gateway()), (PUT, service("chat")))
    pending = world.issue("c1", "chat.example.test", state="pending")
    await world.send((PUT, pending))
    assert world.keys.asked == []
    issued = world.issue("c1", "chat.example.test")
    await world.send((PUT, issued))
    assert world.keys.asked == ["c1"]
    # Gateway status updates (Envoys acknowledging) fetch nothing.
    status = gateway()
    status.status.envoys.add(node_id="gateway/gw-1/0", acked_revision=3)
    await world.send((PUT, status))
    assert world.keys.asked == ["c1"]
    # A gateway whose TLS ends at the load balancer: no key, no TLS port, no redirect.
    await world.send((PUT, gateway(certificate="acm")), (PUT, world.issue("c2", "*.example.test")))
    snapshot = world.snapshot()
    assert world.keys.asked == ["c1"]
    assert set(snapshot.entries(LISTENER)) == {"http"} and set(snapshot.entries(SECRET)) == set()
    assert not redirects(snapshot, "chat")


async def test_a_renewal_re_sends_only_its_secret() -> None:
    world = World()
    await world.send((PUT, gateway()), (PUT, service("chat")), (PUT, world.issue("c1", "chat.example.test")))
    before = world.snapshot()
    await world.send((PUT, world.issue("c1", "chat.example.test")))
    after = world.assert_matches_whole_build()
    assert changed(before, after) == {SECRET: {"cert-c1"}}
    assert world.keys.asked == ["c1", "c1"]


async def test_a_challenge_changes_its_hosts_scope_at_its_revision() -> None:
    world = World()
    await world.send((PUT, gateway()), *((PUT, service(f"s{i}")) for i in range(50)))
    before = world.snapshot()
    challenge = resources_pb2.AcmeChallenge(
        token="tok_1", key_authorization="tok_1.thumb", gateway_id="gw-1", hostname="s7.example.test"
    )
    await world.send((PUT, challenge))
    after = world.assert_matches_whole_build()
    assert after.revision == world.revision
    assert changed(before, after) == {SCOPED_ROUTE: {scope_of("s7")}}
    # A challenge for a name without a service still reaches the Envoys at its revision.
    stray = resources_pb2.AcmeChallenge(
        token="tok_2", key_authorization="x", gateway_id="gw-1", hostname="n.x"
    )
    await world.send((PUT, stray))
    assert world.snapshot().revision == world.revision
    await world.send((DELETE, challenge))
    assert changed(after, world.assert_matches_whole_build()) == {SCOPED_ROUTE: {scope_of("s7")}}


async def test_a_key_that_does_not_match_its_chain_is_not_served() -> None:
    world = World()
    await world.send((PUT, gateway()), (PUT, service("chat")))
    certificate = world.issue("c1", "chat.example.test")
    world.keys.keys["c1"] = key_pair("other.example.test")[1]
    await world.send((PUT, certificate))
    assert set(world.snapshot().entries(SECRET)) == set() and not redirects(world.snapshot(), "chat")


async def test_a_failed_key_fetch_is_tried_again() -> None:
    world = World()
    world.provider.key_retry_seconds = 0.01
    world.keys.failures = 1
    await world.send((PUT, gateway()), (PUT, service("chat")), (PUT, world.issue("c1", "chat.example.test")))
    assert set(world.snapshot().entries(SECRET)) == set()
    async with asyncio.timeout(5):
        while world.snapshot().get(SECRET, "cert-c1") is None:
            await asyncio.sleep(0.01)
    assert world.keys.asked == ["c1", "c1"]
    world.assert_matches_whole_build()


@pytest.mark.parametrize("https_port", [0, HTTPS_PORT])
async def test_no_tls_port_without_one_reported(https_port: int) -> None:
    world = World()
    reported = gateway()
    reported.status.https_port = https_port
    await world.send((PUT, reported), (PUT, service("chat")), (PUT, world.issue("c1", "chat.example.test")))
    expected = {"http", "https"} if https_port else {"http"}
    assert set(world.snapshot().entries(LISTENER)) == expected

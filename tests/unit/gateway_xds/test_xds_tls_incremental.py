"""TLS ports, certificates over SDS and ACME answers: incremental builds equal whole ones, a renewal
re-sends only its Secret, a challenge only its host's scope."""

from __future__ import annotations

import dataclasses

from gateway_xds.cache.snapshot import Snapshot, diff_names
from gateway_xds.incremental import IncrementalGateway
from gateway_xds.ir.backends import Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.service_route import ServiceRoute
from gateway_xds.ir.tls import AcmeChallenge, ServerCertificate, TLSPort, TLSSecret, covers
from gateway_xds.publish import snapshot_from_ir
from gateway_xds.resources import LISTENER, PUSH_ORDER, SCOPED_ROUTE, SECRET
from gateway_xds.testing.builders import domain_route, http_listener, service_name


def secret(name: str, serial: int = 1) -> TLSSecret:
    return TLSSecret(
        name,
        f"-----BEGIN CERTIFICATE-----\n{name}-{serial}\n-----END CERTIFICATE-----\n",
        f"-----BEGIN PRIVATE KEY-----\n{name}-{serial}\n-----END PRIVATE KEY-----\n",
    )


def tls_listener(*certificates: tuple[str, str]) -> HTTPListener:
    chains = tuple(ServerCertificate(name, (host,)) for name, host in certificates)
    return dataclasses.replace(http_listener(), tls=TLSPort("https", 8443, chains))


def versions(snapshot: Snapshot) -> dict[str, dict[str, str]]:
    return {t: {n: r.version for n, r in snapshot.entries(t).items()} for t in PUSH_ORDER}


def changed(older: Snapshot, newer: Snapshot) -> dict[str, set[str]]:
    """What a push of `newer` to a node that has `older` sends, by type."""
    return {t: names for t in PUSH_ORDER if (names := diff_names(older, newer, t))}


def assert_same_as_whole(incremental: IncrementalGateway, snapshot: Snapshot) -> None:
    assert versions(snapshot) == versions(snapshot_from_ir(incremental.ir(), snapshot.revision))


def gateway_with_certificates(services: int = 50) -> tuple[IncrementalGateway, Snapshot]:
    incremental = IncrementalGateway("gw-1")
    for index in range(services):
        incremental.put_service(str(index), domain_route(service_name(index), (Endpoint("10.0.0.1", 80),)))
    incremental.put_secret(secret("cert-a"))
    incremental.put_secret(secret("cert-w"))
    incremental.set_listeners([tls_listener(("cert-a", "a.example.test"), ("cert-w", "*.example.test"))])
    return incremental, incremental.commit(1)


def test_a_tls_port_is_a_second_listener_with_one_chain_per_certificate() -> None:
    incremental, snapshot = gateway_with_certificates()
    assert snapshot.consistent() == []
    assert set(snapshot.entries(LISTENER)) == {"http", "https"}
    assert set(snapshot.entries(SECRET)) == {"cert-a", "cert-w"}
    assert snapshot.referenced(SECRET) == {"cert-a": 1, "cert-w": 1}
    https = snapshot.get(LISTENER, "https")
    assert https is not None
    chains = https.message.filter_chains  # type: ignore[attr-defined]
    assert [list(c.filter_chain_match.server_names) for c in chains] == [
        ["a.example.test"],
        ["*.example.test"],
    ]
    assert https.message.address.socket_address.port_value == 8443  # type: ignore[attr-defined]
    assert_same_as_whole(incremental, snapshot)


def test_a_renewal_changes_only_its_secret() -> None:
    incremental, first = gateway_with_certificates()
    incremental.put_secret(secret("cert-w", serial=2))
    incremental.set_listeners([tls_listener(("cert-a", "a.example.test"), ("cert-w", "*.example.test"))])
    second = incremental.commit(2)
    assert changed(first, second) == {SECRET: set({"cert-w"})}
    assert_same_as_whole(incremental, second)


def test_a_new_certificate_changes_the_tls_listener_only() -> None:
    incremental, first = gateway_with_certificates()
    incremental.put_secret(secret("cert-b"))
    incremental.set_listeners(
        [tls_listener(("cert-a", "a.example.test"), ("cert-w", "*.example.test"), ("cert-b", "b.other.test"))]
    )
    second = incremental.commit(2)
    assert changed(first, second) == {SECRET: set({"cert-b"}), LISTENER: set({"https"})}
    assert_same_as_whole(incremental, second)


def test_a_challenge_changes_its_hosts_scope_only() -> None:
    incremental, first = gateway_with_certificates()
    route = domain_route(service_name(7), (Endpoint("10.0.0.1", 80),))
    answer = AcmeChallenge("tok_en-1", "tok_en-1.thumb")
    vhost = dataclasses.replace(route.virtual_host, acme_challenges=(answer,))
    incremental.put_service("7", ServiceRoute(route.listener, vhost, route.backend))
    second = incremental.commit(2)
    assert changed(first, second) == {SCOPED_ROUTE: set({service_name(7)})}
    scope = second.get(SCOPED_ROUTE, service_name(7))
    assert scope is not None
    first_route = scope.message.route_configuration.virtual_hosts[0].routes[0]  # type: ignore[attr-defined]
    assert first_route.match.path == "/.well-known/acme-challenge/tok_en-1"
    assert first_route.direct_response.body.inline_string == "tok_en-1.thumb"
    assert_same_as_whole(incremental, second)


def test_removing_a_certificate_removes_its_chain_and_secret() -> None:
    incremental, _ = gateway_with_certificates()
    incremental.remove_secret("cert-a")
    incremental.set_listeners([tls_listener(("cert-w", "*.example.test"))])
    snapshot = incremental.commit(2)
    assert set(snapshot.entries(SECRET)) == {"cert-w"} and snapshot.consistent() == []
    assert_same_as_whole(incremental, snapshot)


def test_a_chain_without_its_secret_is_inconsistent() -> None:
    ir = GatewayIR("gw-1", (tls_listener(("cert-a", "a.example.test")),))
    assert ir.validate() == ["listener 'http': unknown secret 'cert-a'"]
    incremental = IncrementalGateway("gw-1")
    incremental.set_listeners([tls_listener(("cert-a", "a.example.test"))])
    try:
        incremental.commit(1)
    except ValueError as error:
        assert "refers to missing secret 'cert-a'" in str(error)
    else:
        raise AssertionError("a listener naming a missing secret was published")


def test_tls_validation_lists_every_problem() -> None:
    chains = (
        ServerCertificate("cert-a", ("a.example.test", "Bad Name")),
        ServerCertificate("cert-b", ("a.example.test",)),
    )
    listener = dataclasses.replace(http_listener(port=8080), tls=TLSPort("https", 8080, chains))
    ir = GatewayIR("gw-1", (listener,), secrets=(secret("cert-a"), secret("cert-b"), TLSSecret("x", "", "")))
    assert ir.validate() == [
        "duplicate listener port 8080",
        "secret 'x': the certificate chain is not PEM",
        "secret 'x': the private key is not PEM",
        "listener 'http': certificate 'cert-a': invalid server name 'Bad Name'",
        "listener 'http': server name 'a.example.test' is served by two certificates",
        "listener 'http': the TLS port needs its own port and name",
    ]


def test_a_bad_acme_token_is_refused() -> None:
    incremental = IncrementalGateway("gw-1")
    incremental.set_listeners([http_listener()])
    route = domain_route("svc-a", ())
    vhost = dataclasses.replace(route.virtual_host, acme_challenges=(AcmeChallenge("../etc", "x"),))
    incremental.put_service("a", ServiceRoute(route.listener, vhost, route.backend))
    incremental.commit(1)
    assert incremental.errors["a"] == ["listener 'http' virtual host 'svc-a': invalid ACME token '../etc'"]


def test_wildcards_cover_one_label() -> None:
    assert covers("*.example.test", "a.example.test")
    assert not covers("*.example.test", "a.b.example.test")
    assert not covers("*.example.test", "example.test")
    assert covers("a.example.test", "a.example.test") and not covers("a.example.test", "b.example.test")

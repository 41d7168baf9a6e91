"""IncrementalGateway and Snapshot.evolve give what translating the whole IR gives."""

import random

import pytest
from google.protobuf.message import Message

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.incremental import IncrementalGateway
from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.listeners import HTTPListener, RouteTable
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.ir.service_route import ServiceRoute
from gateway_xds.publish import snapshot_from_ir
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE
from gateway_xds.testing.builders import domain_gateway, domain_route, http_listener, service_name


def versions(snapshot: Snapshot) -> dict[str, dict[str, str]]:
    return {t: {n: r.version for n, r in snapshot.entries(t).items()} for t in PUSH_ORDER}


def assert_same_as_whole(incremental: IncrementalGateway, snapshot: Snapshot) -> None:
    whole = snapshot_from_ir(incremental.ir(), snapshot.revision)
    assert versions(snapshot) == versions(whole)
    assert all(snapshot.version(t) == whole.version(t) for t in PUSH_ORDER)


def _random_route(rng: random.Random, index: int) -> ServiceRoute:
    name = service_name(index)
    endpoints = tuple(Endpoint("10.0.0.1", 8000 + p) for p in range(rng.randint(0, 2)))
    if rng.random() < 0.25:
        listener = f"port-{9000 + index}"
        return ServiceRoute(listener, VirtualHost(name, ("*",), name), Backend(name, endpoints))
    return domain_route(name, endpoints)


@pytest.mark.parametrize("seed", range(5))
def test_random_changes_match_the_whole_translation(seed: int) -> None:
    rng = random.Random(seed)
    incremental = IncrementalGateway("gw-1")
    present: dict[int, ServiceRoute] = {}
    for revision in range(1, 60):
        for _ in range(rng.randint(1, 4)):
            index = rng.randrange(30)
            if index in present and rng.random() < 0.4:
                incremental.remove_service(str(index))
                del present[index]
            else:
                present[index] = _random_route(rng, index)
                incremental.put_service(str(index), present[index])
        mapped = {r.listener for r in present.values() if r.listener != "http"}
        table = RouteTable.PER_HOST if rng.random() < 0.9 else RouteTable.SINGLE
        listeners = [http_listener(route_table=table)]
        listeners += [HTTPListener(name, "127.0.0.1", int(name.split("-")[1])) for name in sorted(mapped)]
        incremental.set_listeners(listeners)
        snapshot = incremental.commit(revision)
        assert snapshot.consistent() == []
        assert_same_as_whole(incremental, snapshot)


def test_a_change_touches_only_its_own_resources() -> None:
    translated: list[tuple[str, str]] = []

    def count(type_url: str, name: str, message: Message) -> Message:
        translated.append((type_url, name))
        return message

    incremental = IncrementalGateway("gw-1", hook=count)
    incremental.set_listeners([http_listener()])
    for index in range(500):
        incremental.put_service(str(index), domain_route(service_name(index), (Endpoint("10.0.0.1", 80),)))
    first = incremental.commit(1)
    translated.clear()
    incremental.put_service("7", domain_route(service_name(7), (Endpoint("10.0.0.2", 80),)))
    second = incremental.commit(2)
    # The service's cluster, endpoints and scope, and the listener it sits on (unchanged).
    assert sorted(translated) == sorted(
        [
            (CLUSTER, service_name(7)),
            (ENDPOINT, service_name(7)),
            (SCOPED_ROUTE, service_name(7)),
            (LISTENER, "http"),
        ]
    )
    assert second.changed_since(first) == {ENDPOINT: frozenset({service_name(7)})}
    assert_same_as_whole(incremental, second)


def test_switching_route_tables_moves_virtual_hosts() -> None:
    incremental = IncrementalGateway("gw-1")
    incremental.set_listeners([http_listener(route_table=RouteTable.PER_HOST)])
    for index in range(3):
        incremental.put_service(str(index), domain_route(service_name(index), ()))
    per_host = incremental.commit(1)
    assert set(per_host.entries(SCOPED_ROUTE)) == {service_name(i) for i in range(3)}
    assert set(per_host.entries(ROUTE)) == set()
    incremental.set_listeners([http_listener(route_table=RouteTable.SINGLE)])
    single = incremental.commit(2)
    assert set(single.entries(SCOPED_ROUTE)) == set() and set(single.entries(ROUTE)) == {"http"}
    assert_same_as_whole(incremental, single)


def test_an_invalid_service_is_left_out_and_retried() -> None:
    incremental = IncrementalGateway("gw-1")
    incremental.set_listeners([http_listener()])
    incremental.put_service("a", domain_route("svc-a", (), domain="shared.test"))
    clash = ServiceRoute("http", VirtualHost("svc-b", ("svc-a.shared.test",), "svc-b"), Backend("svc-b"))
    incremental.put_service("b", clash)
    first = incremental.commit(1)
    assert set(first.entries(CLUSTER)) == {"svc-a"}
    assert "already 'a''s" in incremental.errors["b"][0]
    incremental.remove_service("a")
    second = incremental.commit(2)
    assert set(second.entries(CLUSTER)) == {"svc-b"} and incremental.errors == {}
    assert_same_as_whole(incremental, second)


def test_evolve_keeps_versions_equal_to_a_whole_build() -> None:
    small, large = snapshot_from_ir(domain_gateway(3), 1), snapshot_from_ir(domain_gateway(4), 2)
    updates = {
        t: {n: large.get(t, n) for n in large.entries(t) if small.get(t, n) is None} for t in PUSH_ORDER
    }
    evolved = small.evolve(2, updates)
    assert versions(evolved) == versions(large)
    assert all(evolved.version(t) == large.version(t) for t in PUSH_ORDER)
    assert evolved.changed_since(small) == {
        CLUSTER: frozenset({service_name(3)}),
        ENDPOINT: frozenset({service_name(3)}),
        SCOPED_ROUTE: frozenset({service_name(3)}),
    }
    assert small.changed_since(evolved) is None and large.changed_since(small) is None
    changed = evolved.changed_since(small)
    assert changed is not None
    back = evolved.evolve(3, {t: {n: None for n in names} for t, names in changed.items()})
    assert versions(back) == versions(small) and back.version(CLUSTER) == small.version(CLUSTER)


def test_evolve_refuses_dangling_references() -> None:
    snapshot = snapshot_from_ir(domain_gateway(2), 1)
    dangling = snapshot.evolve(2, {ENDPOINT: {service_name(0): None}})
    assert dangling.consistent() == [
        f"removed ClusterLoadAssignment {service_name(0)!r} is still referred to"
    ]
    orphan_scope = snapshot_from_ir(domain_gateway([service_name(5)]), 1).get(SCOPED_ROUTE, service_name(5))
    missing = snapshot.evolve(2, {SCOPED_ROUTE: {service_name(5): orphan_scope}})
    assert missing.consistent() == [
        f"ScopedRouteConfiguration {service_name(5)!r} refers to missing cluster {service_name(5)!r}"
    ]


def test_the_change_log_is_bounded() -> None:
    first = snapshot_from_ir(domain_gateway(1), 0)
    current = first
    for revision in range(1, 100):
        current = current.with_revision(revision)
    assert current.changed_since(first) is None
    assert current.changed_since(current) == {}

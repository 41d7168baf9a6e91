"""RegistryProvider: watch events become snapshots, one service at a time, equal to a whole build."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.provider.build import gateway_ir
from gateway_xds.provider.registry import RegistryProvider
from gateway_xds.publish import snapshot_from_ir
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE, SCOPED_ROUTE

PUT, DELETE = registry_pb2.EVENT_TYPE_PUT, registry_pb2.EVENT_TYPE_DELETE


def gateway(domain: str = "example.test") -> resources_pb2.Gateway:
    return resources_pb2.Gateway(
        id="gw-1",
        name="edge",
        spec=resources_pb2.GatewaySpec(domain=domain),
        status=resources_pb2.GatewayStatus(listen_address="127.0.0.1", http_port=8080),
    )


def service(name: str, **spec: Any) -> resources_pb2.Service:
    return resources_pb2.Service(
        id=f"svc-{name}",
        project="main",
        name=name,
        spec=resources_pb2.ServiceSpec(gateway_id="gw-1", **spec),
    )


def replica(name: str, port: int, ready: bool = True) -> resources_pb2.Replica:
    return resources_pb2.Replica(
        id=f"rep-{name}-{port}", service_id=f"svc-{name}", address=f"127.0.0.1:{port}", ready=ready
    )


class Feed:
    def __init__(self, provider: RegistryProvider) -> None:
        self.provider = provider
        self.revision = 0

    def send(self, *objects: tuple[registry_pb2.EventType, Message]) -> set[str]:
        events = []
        for kind, obj in objects:
            self.revision += 1
            event = registry_pb2.WatchEvent(revision=self.revision, type=kind)
            getattr(event, _field(obj)).CopyFrom(obj)
            events.append(event)
        return self.provider.apply(self.provider.mirror.apply(events))


FIELDS: dict[type[Message], str] = {
    resources_pb2.Gateway: "gateway",
    resources_pb2.Service: "service",
    resources_pb2.Replica: "replica",
}


def _field(obj: Message) -> str:
    return FIELDS[type(obj)]


def versions(snapshot: Snapshot) -> dict[str, dict[str, str]]:
    return {t: {n: r.version for n, r in snapshot.entries(t).items()} for t in PUSH_ORDER}


def assert_matches_whole_build(provider: RegistryProvider, cache: SnapshotCache) -> Snapshot:
    mirror = provider.mirror
    services = [s for s in mirror.services.values() if s.spec.gateway_id == "gw-1"]
    replicas = {s.id: [r for r in mirror.replicas.values() if r.service_id == s.id] for s in services}
    ir = gateway_ir(mirror.gateways["gw-1"], services, replicas, credentials=provider.credentials)
    whole = snapshot_from_ir(ir, mirror.revision)
    current = cache.get("gw-1")
    assert current is not None
    assert versions(current) == versions(whole)
    return current


def test_services_and_replicas_follow_the_feed() -> None:
    cache = SnapshotCache()
    provider = RegistryProvider(None, cache)
    feed = Feed(provider)
    assert feed.send((PUT, gateway())) == {"gw-1"}
    assert set(assert_matches_whole_build(provider, cache).entries(LISTENER)) == {"http"}
    assert feed.send((PUT, service("chat", hostname="chat.example.test")), (PUT, replica("chat", 9000))) == {
        "gw-1"
    }
    snapshot = assert_matches_whole_build(provider, cache)
    assert set(snapshot.entries(SCOPED_ROUTE)) == {"svc_main_chat"}
    assert snapshot.revision == feed.revision
    feed.send((PUT, service("mapped", gateway_port=5001)), (PUT, replica("mapped", 9001)))
    snapshot = assert_matches_whole_build(provider, cache)
    assert set(snapshot.entries(LISTENER)) == {"http", "port-5001"}
    assert set(snapshot.entries(ROUTE)) == {"port-5001"}
    feed.send((PUT, replica("chat", 9000, ready=False)))
    assert assert_matches_whole_build(provider, cache).get(ENDPOINT, "svc_main_chat").message.endpoints == []  # type: ignore[union-attr]
    feed.send((DELETE, service("mapped", gateway_port=5001)), (DELETE, replica("mapped", 9001)))
    snapshot = assert_matches_whole_build(provider, cache)
    assert set(snapshot.entries(LISTENER)) == {"http"} and set(snapshot.entries(CLUSTER)) == {"svc_main_chat"}


def test_a_catch_all_on_port_80_turns_the_http_listener_into_one_route_configuration() -> None:
    cache = SnapshotCache()
    provider = RegistryProvider(None, cache)
    feed = Feed(provider)
    feed.send((PUT, gateway()), (PUT, service("chat", hostname="chat.example.test")))
    feed.send((PUT, service("root", gateway_port=80)))
    snapshot = assert_matches_whole_build(provider, cache)
    assert set(snapshot.entries(ROUTE)) == {"http"} and set(snapshot.entries(SCOPED_ROUTE)) == set()
    feed.send((DELETE, service("root", gateway_port=80)))
    snapshot = assert_matches_whole_build(provider, cache)
    assert set(snapshot.entries(SCOPED_ROUTE)) == {"svc_main_chat"} and set(snapshot.entries(ROUTE)) == set()


def test_a_moved_service_leaves_its_old_gateway_and_a_deleted_gateway_is_cleared() -> None:
    cache = SnapshotCache()
    provider = RegistryProvider(None, cache)
    feed = Feed(provider)
    other = gateway()
    other.id, other.name = "gw-2", "other"
    feed.send((PUT, gateway()), (PUT, other), (PUT, service("chat", hostname="chat.example.test")))
    moved = service("chat", hostname="chat.example.test")
    moved.spec.gateway_id = "gw-2"
    assert feed.send((PUT, moved)) == {"gw-1", "gw-2"}
    assert set(assert_matches_whole_build(provider, cache).entries(CLUSTER)) == set()
    second = cache.get("gw-2")
    assert second is not None and set(second.entries(CLUSTER)) == {"svc_main_chat"}
    feed.send((DELETE, other))
    assert cache.get("gw-2") is None


def test_a_one_service_change_does_work_for_that_service_only() -> None:
    translated: list[tuple[str, str]] = []
    cache = SnapshotCache()

    def hook(type_url: str, name: str, message: Message) -> Message:
        translated.append((type_url, name))
        return message

    provider = RegistryProvider(None, cache, hook=hook)
    feed = Feed(provider)
    feed.send((PUT, gateway()))
    for index in range(300):
        name = f"s{index}"
        feed.send((PUT, service(name, hostname=f"{name}.example.test")), (PUT, replica(name, 9000)))
    translated.clear()
    feed.send((PUT, replica("s7", 9001)))
    assert {name for _, name in translated} == {"svc_main_s7", "http"}
    assert_matches_whole_build(provider, cache)


def test_a_resync_rebuilds_and_only_changes_what_differs() -> None:
    cache = SnapshotCache()
    provider = RegistryProvider(None, cache)
    feed = Feed(provider)
    feed.send(
        (PUT, gateway()), (PUT, service("chat", hostname="chat.example.test")), (PUT, replica("chat", 9000))
    )
    before = cache.get("gw-1")
    snapshot = registry_pb2.SnapshotResponse(
        revision=feed.revision + 5,
        gateways=[gateway()],
        services=[service("chat", hostname="chat.example.test"), service("new", hostname="new.example.test")],
        replicas=[replica("chat", 9000)],
    )
    provider.apply(provider.mirror.load(snapshot))
    after = assert_matches_whole_build(provider, cache)
    assert before is not None and after.changed_since(before) == {
        CLUSTER: frozenset({"svc_main_new"}),
        ENDPOINT: frozenset({"svc_main_new"}),
        SCOPED_ROUTE: frozenset({"svc_main_new"}),
    }


async def test_after_resync_runs_once_a_whole_state_is_published_and_not_for_events() -> None:
    calls: list[int] = []
    cache = SnapshotCache()
    provider = RegistryProvider(None, cache, after_resync=lambda: calls.append(len(cache.gateway_ids())))
    snapshot = registry_pb2.SnapshotResponse(revision=3, gateways=[gateway()], services=[service("web")])
    await provider.on_change(provider.mirror.load(snapshot))
    assert calls == [1]  # the gateway's snapshot was there when it ran
    event = registry_pb2.WatchEvent(revision=4, type=PUT, replica=replica("web", 9000))
    await provider.on_change(provider.mirror.apply([event]))
    assert calls == [1]

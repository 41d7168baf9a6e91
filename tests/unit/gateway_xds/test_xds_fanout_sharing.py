"""What the streams of one gateway share (one watch, encoded responses) and what stays their own
(subscriptions, nonces, what each node refused), over a real grpc.aio server."""

import asyncio

from envoy.service.discovery.v3 import discovery_pb2

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Endpoint
from gateway_xds.publish import publish
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, SECRET
from gateway_xds.server.delta_state import BULK_RESOURCES
from gateway_xds.server.gateway_watch import GatewayWatches
from gateway_xds.server.server import XdsServer
from gateway_xds.testing.ads_client import DeltaAdsClient, DeltaConnect
from gateway_xds.testing.builders import domain_gateway, service_name

A, B = "gateway/gw-1/0", "gateway/gw-1/1"


async def recv(client: DeltaAdsClient, type_url: str) -> discovery_pb2.DeltaDiscoveryResponse:
    response = await client.recv()
    assert response.type_url == type_url, f"expected {type_url}, got {response.type_url}"
    return response


def versions(response: discovery_pb2.DeltaDiscoveryResponse) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def expected(snapshot: Snapshot, type_url: str, indexes: range | list[int]) -> dict[str, str]:
    out = {}
    for index in indexes:
        resource = snapshot.get(type_url, service_name(index))
        assert resource is not None
        out[resource.name] = resource.version
    return out


async def test_streams_get_their_own_subscriptions_and_nonces(
    cache: SnapshotCache, xds_server: XdsServer, delta: DeltaConnect
) -> None:
    publish(cache, domain_gateway(3), 1)
    a, b = await delta(A), await delta(B)
    for client, wanted in ((a, [0]), (b, [0, 1, 2])):
        await client.request(CLUSTER)
        await client.ack(await recv(client, CLUSTER))
        await client.request(ENDPOINT, [service_name(i) for i in wanted])
        await client.ack(await recv(client, ENDPOINT))
    # A has had one response more than B: the streams' nonces part ways.
    await a.request(SECRET, ["probe"])
    await a.ack(await recv(a, SECRET))
    moved = publish(cache, domain_gateway(3, endpoints=(Endpoint("127.0.0.1", 9999),)), 2)
    to_a, to_b = await recv(a, ENDPOINT), await recv(b, ENDPOINT)
    assert versions(to_a) == expected(moved, ENDPOINT, [0])
    assert versions(to_b) == expected(moved, ENDPOINT, range(3))
    await a.ack(to_a)
    await b.ack(to_b)
    # Both get a new cluster alike, each with its own stream's nonce.
    grown = publish(cache, domain_gateway(4, endpoints=(Endpoint("127.0.0.1", 9999),)), 3)
    clusters_a, clusters_b = await recv(a, CLUSTER), await recv(b, CLUSTER)
    assert versions(clusters_a) == versions(clusters_b) == expected(grown, CLUSTER, [3])
    assert clusters_a.system_version_info == clusters_b.system_version_info == "3"
    assert (clusters_a.nonce, clusters_b.nonce) == (str(int(to_a.nonce) + 1), str(int(to_b.nonce) + 1))
    assert clusters_a.nonce != clusters_b.nonce
    for client, response in ((a, clusters_a), (b, clusters_b)):
        await client.ack(response)
        await client.request(ENDPOINT, [service_name(3)])
        endpoints = await recv(client, ENDPOINT)
        assert versions(endpoints) == expected(grown, ENDPOINT, [3])
        await client.ack(endpoints)
    # Every ACK named a response its own stream sent (an unknown nonce would not count).
    await a.request(SECRET, ["probe-2"])
    await b.request(SECRET, ["probe-2"])
    await recv(a, SECRET), await recv(b, SECRET)
    assert (xds_server.stats.of_node(A).acks, xds_server.stats.of_node(B).acks) == (6, 5)


async def test_a_nack_on_one_stream_leaves_the_others_responses_alone(
    cache: SnapshotCache, delta: DeltaConnect
) -> None:
    publish(cache, domain_gateway(2), 1)
    a, b = await delta(A), await delta(B)
    for client in (a, b):
        await client.request(CLUSTER)
        await client.ack(await recv(client, CLUSTER))
    second = publish(cache, domain_gateway(3), 2)
    to_a, to_b = await recv(a, CLUSTER), await recv(b, CLUSTER)
    assert versions(to_a) == versions(to_b) == expected(second, CLUSTER, [2])
    await a.ack(to_a)
    await b.nack(to_b, "bad cluster")
    third = publish(cache, domain_gateway(4), 3)
    to_a, to_b = await recv(a, CLUSTER), await recv(b, CLUSTER)
    assert versions(to_a) == expected(third, CLUSTER, [3])
    # B is offered again what it refused, along with the change; A's response is not touched by it.
    assert versions(to_b) == expected(third, CLUSTER, [2, 3])
    await a.ack(to_a)
    await b.ack(to_b)
    fourth = publish(cache, domain_gateway(5), 4)
    to_a, to_b = await recv(a, CLUSTER), await recv(b, CLUSTER)
    assert versions(to_a) == versions(to_b) == expected(fourth, CLUSTER, [4])


class Heard:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []
        self.failed = False

    def snapshot_changed(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    def watch_failed(self) -> None:
        self.failed = True


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_one_watch_per_gateway_tells_each_of_its_streams_once(cache: SnapshotCache) -> None:
    watches = GatewayWatches(cache)
    first, second, other = Heard(), Heard(), Heard()
    watches.join("gw-1", first)
    watches.join("gw-1", second)
    watches.join("gw-2", other)
    assert (watches.watching("gw-1"), watches.watching("gw-2")) == (2, 1)
    one = Snapshot.empty(1)
    two = one.with_revision(2)
    cache.set_snapshot("gw-1", one)
    cache.set_snapshot("gw-1", two)  # before the watch ran: only the latest is handed over
    await settle()
    assert first.snapshots == second.snapshots == [two]
    assert other.snapshots == []
    watches.leave("gw-1", first)
    cache.set_snapshot("gw-1", two.with_revision(3))
    await settle()
    assert [s.revision for s in first.snapshots] == [2]
    assert [s.revision for s in second.snapshots] == [2, 3]
    watches.leave("gw-1", second)
    watches.leave("gw-2", other)
    assert (watches.watching("gw-1"), watches.watching("gw-2")) == (0, 0)
    cache.set_snapshot("gw-1", two.with_revision(4))
    await settle()
    assert [s.revision for s in second.snapshots] == [2, 3]
    assert not (first.failed or second.failed or other.failed)


async def test_requests_behind_a_bulk_one_are_answered_in_order(
    cache: SnapshotCache, delta: DeltaConnect
) -> None:
    """The first request and bulk ones are handled by the stream's task; what the node sends meanwhile
    waits behind them, then is handled as it is read."""
    snapshot = publish(cache, domain_gateway(BULK_RESOURCES + 1), 1)
    client = await delta(A)
    for type_url in (CLUSTER, LISTENER, SCOPED_ROUTE):
        await client.request(type_url)
    await client.request(SECRET, ["probe"])
    answers = [await client.recv() for _ in range(4)]
    assert [r.type_url for r in answers] == [CLUSTER, LISTENER, SCOPED_ROUTE, SECRET]
    assert len(answers[0].resources) == BULK_RESOURCES + 1
    for response in answers:
        await client.ack(response)
    await client.request(ENDPOINT, sorted(snapshot.required_names(ENDPOINT)))
    await client.request(SECRET, ["probe-2"])
    endpoints, probe = await client.recv(), await client.recv()
    assert (endpoints.type_url, probe.type_url) == (ENDPOINT, SECRET)
    assert len(endpoints.resources) == BULK_RESOURCES + 1

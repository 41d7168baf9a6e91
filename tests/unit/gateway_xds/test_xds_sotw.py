"""The ADS State-of-the-World server, driven over a real grpc.aio server by a Python ADS client."""

import asyncio
import itertools

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.publish import publish
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from gateway_xds.server.server import ADS_SERVICE, XdsServer, build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.ads_client import AdsClient, AdsConnect
from gateway_xds.testing.reporters import RecordingReporter

_MESSAGES = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}
_probes = itertools.count()


def gateway(gid: str = "gw-1", services: dict[str, int] | None = None, port: int = 8081) -> GatewayIR:
    """One listener `port-<n>` per service, each with a catch-all virtual host."""
    services = services if services is not None else {"svc-p-a": 5001, "svc-p-b": 5002}
    return GatewayIR(
        gateway_id=gid,
        listeners=tuple(
            HTTPListener(f"port-{p}", "127.0.0.1", p, (VirtualHost(name, ("*",), name),))
            for name, p in services.items()
        ),
        backends=tuple(Backend(name, (Endpoint("127.0.0.1", port),)) for name in services),
    )


def names(response: discovery_pb2.DiscoveryResponse) -> set[str]:
    out = set()
    for packed in response.resources:
        message = _MESSAGES[response.type_url]()
        packed.Unpack(message)
        out.add(message.cluster_name if response.type_url == ENDPOINT else message.name)
    return out


async def expect(client: AdsClient, type_url: str) -> discovery_pb2.DiscoveryResponse:
    response = await client.recv()
    assert response.type_url == type_url
    return response


async def assert_quiet(client: AdsClient) -> None:
    """Nothing was queued for the client: a request answered at once comes back first."""
    await client.request(SECRET, [f"probe-{next(_probes)}"])
    response = await client.recv()
    assert response.type_url == SECRET, f"unexpected {response.type_url} response"


async def subscribe_all(client: AdsClient, snapshot: Snapshot) -> dict[str, discovery_pb2.DiscoveryResponse]:
    """What Envoy does: CDS, LDS, then EDS and RDS for the names they refer to; ACK everything."""
    last = {}
    for type_url in (CLUSTER, LISTENER, ENDPOINT, ROUTE):
        wanted = sorted(snapshot.required_names(type_url)) if type_url in (ENDPOINT, ROUTE) else []
        await client.request(type_url, wanted)
        last[type_url] = await expect(client, type_url)
        await client.ack(last[type_url], wanted)
    return last


async def test_initial_cds_and_lds(cache: SnapshotCache, ads: AdsConnect) -> None:
    snapshot = publish(cache, gateway(), 1)
    client = await ads("gateway/gw-1/0")
    await client.request(CLUSTER)
    clusters = await expect(client, CLUSTER)
    assert names(clusters) == {"svc-p-a", "svc-p-b"}
    assert clusters.version_info == snapshot.version(CLUSTER)
    await client.request(LISTENER)
    listeners = await expect(client, LISTENER)
    assert names(listeners) == {"port-5001", "port-5002"}
    assert listeners.version_info == snapshot.version(LISTENER)
    assert clusters.nonce and listeners.nonce and clusters.nonce != listeners.nonce


async def test_eds_sends_only_subscribed_names(cache: SnapshotCache, ads: AdsConnect) -> None:
    snapshot = publish(cache, gateway(), 1)
    client = await ads("gateway/gw-1/0")
    await client.request(ENDPOINT, ["svc-p-a"])
    first = await expect(client, ENDPOINT)
    assert names(first) == {"svc-p-a"}
    await client.ack(first, ["svc-p-a", "svc-p-b", "ghost"])
    second = await expect(client, ENDPOINT)
    assert names(second) == {"svc-p-a", "svc-p-b"}
    assert first.version_info == second.version_info == snapshot.version(ENDPOINT)
    assert first.nonce != second.nonce


async def test_ack_is_not_answered_and_a_new_version_is(cache: SnapshotCache, ads: AdsConnect) -> None:
    publish(cache, gateway(), 1)
    client = await ads("gateway/gw-1/0")
    await client.request(CLUSTER)
    first = await expect(client, CLUSTER)
    await client.ack(first)
    await assert_quiet(client)
    publish(cache, gateway(services={"svc-p-a": 5001}), 2)
    second = await expect(client, CLUSTER)
    assert names(second) == {"svc-p-a"}
    assert second.version_info != first.version_info


async def test_stale_nonce_is_neither_ack_nor_nack(
    cache: SnapshotCache, reporter: RecordingReporter, ads: AdsConnect
) -> None:
    publish(cache, gateway(), 1)
    client = await ads("gateway/gw-1/0")
    await client.request(CLUSTER)
    await expect(client, CLUSTER)
    await client.request(CLUSTER, nonce="not-the-last-nonce", error="late complaint")
    await assert_quiet(client)
    assert reporter.of_kind("rejected") == []
    # ...but a stale request's subscription still counts.
    await client.request(ENDPOINT, ["svc-p-a"])
    await expect(client, ENDPOINT)
    await client.request(ENDPOINT, ["svc-p-a", "svc-p-b"], nonce="not-the-last-nonce")
    assert names(await expect(client, ENDPOINT)) == {"svc-p-a", "svc-p-b"}


async def test_nack_is_reported_and_not_resent(
    cache: SnapshotCache, reporter: RecordingReporter, ads: AdsConnect
) -> None:
    publish(cache, gateway(), 1)
    client = await ads("gateway/gw-1/0")
    await client.request(LISTENER)
    rejected = await expect(client, LISTENER)
    await client.nack(rejected, "bad listener")
    async with asyncio.timeout(5):
        report = await reporter.wait_for(lambda r: r.kind == "rejected")
    assert (report.node_id, report.gateway_id) == ("gateway/gw-1/0", "gw-1")
    assert (report.type_url, report.message) == (LISTENER, "bad listener")
    assert report.version == rejected.version_info
    await assert_quiet(client)
    publish(cache, gateway(), 2)  # same content: the rejected version is not pushed again
    await assert_quiet(client)
    publish(cache, gateway(services={"svc-p-a": 5001}), 3)
    fixed = await expect(client, LISTENER)
    assert fixed.version_info != rejected.version_info
    assert names(fixed) == {"port-5001"}


async def test_acked_once_everything_needed_is_acked(
    cache: SnapshotCache, reporter: RecordingReporter, ads: AdsConnect
) -> None:
    snapshot = publish(cache, gateway(), 1)
    client = await ads("gateway/gw-1/0")
    for type_url in (CLUSTER, LISTENER):
        await client.request(type_url)
        await client.ack(await expect(client, type_url))
    await client.request(ENDPOINT, ["svc-p-a", "svc-p-b"])
    await client.ack(await expect(client, ENDPOINT), ["svc-p-a", "svc-p-b"])
    await client.request(ROUTE, ["port-5001"])
    routes = await expect(client, ROUTE)
    await client.ack(routes, ["port-5001"])
    await assert_quiet(client)
    assert reporter.of_kind("acked") == []  # port-5002 is still missing
    await client.ack(routes, ["port-5001", "port-5002"])
    await client.ack(await expect(client, ROUTE), ["port-5001", "port-5002"])
    async with asyncio.timeout(5):
        await reporter.wait_for(lambda r: r.kind == "acked")
    assert [(r.node_id, r.gateway_id, r.revision) for r in reporter.of_kind("acked")] == [
        ("gateway/gw-1/0", "gw-1", snapshot.revision)
    ]
    # A new revision with the same content is applied already.
    publish(cache, gateway(), 2)
    async with asyncio.timeout(5):
        await reporter.wait_for(lambda r: r.kind == "acked" and r.revision == 2)
    await assert_quiet(client)
    assert len(reporter.of_kind("acked")) == 2


async def test_new_snapshot_pushes_only_changed_types_in_order(
    cache: SnapshotCache, reporter: RecordingReporter, ads: AdsConnect
) -> None:
    first = publish(cache, gateway(), 1)
    client = await ads("gateway/gw-1/0")
    last = await subscribe_all(client, first)
    publish(cache, gateway(port=9999), 2)
    moved = await expect(client, ENDPOINT)
    assert names(moved) == {"svc-p-a", "svc-p-b"}
    await client.ack(moved, ["svc-p-a", "svc-p-b"])
    await assert_quiet(client)
    async with asyncio.timeout(5):
        await reporter.wait_for(lambda r: r.kind == "acked" and r.revision == 2)

    grown = publish(cache, gateway(services={"svc-p-a": 5001, "svc-p-b": 5002, "svc-p-c": 5003}), 3)
    pushed = [await client.recv() for _ in range(4)]
    assert [r.type_url for r in pushed] == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    assert pushed[0].version_info != last[CLUSTER].version_info
    # EDS and RDS answer with the names subscribed so far; Envoy then asks for the new ones.
    assert names(pushed[1]) == {"svc-p-a", "svc-p-b"}
    assert names(pushed[3]) == {"port-5001", "port-5002"}
    for response in pushed:
        await client.ack(response, sorted(names(response)) if response.type_url in (ENDPOINT, ROUTE) else [])
    await client.request(ENDPOINT, sorted(grown.required_names(ENDPOINT)), nonce=pushed[1].nonce)
    eds = await expect(client, ENDPOINT)
    assert names(eds) == {"svc-p-a", "svc-p-b", "svc-p-c"}
    assert eds.version_info == pushed[1].version_info
    await client.ack(eds, sorted(names(eds)))
    await client.request(ROUTE, sorted(grown.required_names(ROUTE)), nonce=pushed[3].nonce)
    rds = await expect(client, ROUTE)
    await client.ack(rds, sorted(names(rds)))
    async with asyncio.timeout(5):
        await reporter.wait_for(lambda r: r.kind == "acked" and r.revision == 3)


async def test_snapshot_published_after_connecting(cache: SnapshotCache, ads: AdsConnect) -> None:
    client = await ads("gateway/gw-1/0")
    await client.request(CLUSTER)
    await client.request(LISTENER)
    snapshot = publish(cache, gateway(), 1)
    assert (await expect(client, CLUSTER)).version_info == snapshot.version(CLUSTER)
    assert (await expect(client, LISTENER)).version_info == snapshot.version(LISTENER)


async def test_node_of_one_gateway_never_gets_another_gateways_resources(
    cache: SnapshotCache, ads: AdsConnect
) -> None:
    node_a, node_b = await ads("gateway/gw-a/0"), await ads("gateway/gw-b/1")
    for client in (node_a, node_b):
        await client.request(CLUSTER)
    publish(cache, gateway("gw-b", {"svc-b-only": 5001}), 1)
    assert names(await expect(node_b, CLUSTER)) == {"svc-b-only"}
    publish(cache, gateway("gw-a", {"svc-a-only": 5001}), 1)
    assert names(await expect(node_a, CLUSTER)) == {"svc-a-only"}
    await assert_quiet(node_a)


async def test_cleared_gateway_gets_empty_configuration(cache: SnapshotCache, ads: AdsConnect) -> None:
    publish(cache, gateway(), 1)
    client = await ads("gateway/gw-1/0")
    for type_url in (CLUSTER, LISTENER):
        await client.request(type_url)
        await client.ack(await expect(client, type_url))
    cache.clear("gw-1")
    # Make-before-break: the clusters go once the node has dropped the listeners routing to them.
    listeners = await expect(client, LISTENER)
    assert names(listeners) == set()
    await assert_quiet(client)
    await client.ack(listeners)
    assert names(await expect(client, CLUSTER)) == set()


BAD_NODE_IDS = ["", "envoy-1", "gateway/gw-1", "gateway//0", "gateway/gw-1/x", "gateway/a/b/0"]


@pytest.mark.parametrize("node_id", BAD_NODE_IDS)
async def test_bad_node_id_ends_the_stream(
    node_id: str, reporter: RecordingReporter, ads: AdsConnect
) -> None:
    client = await ads(node_id)
    await client.request(CLUSTER)
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT
    assert reporter.reports == []


async def test_missing_type_url_ends_the_stream(ads: AdsConnect) -> None:
    client = await ads("gateway/gw-1/0")
    await client.request("")
    assert await client.status() == grpc.StatusCode.INVALID_ARGUMENT


async def test_connect_and_disconnect_are_reported(reporter: RecordingReporter, ads: AdsConnect) -> None:
    client = await ads("gateway/gw-1/3")
    await client.request(CLUSTER)
    async with asyncio.timeout(5):
        await reporter.wait_for(lambda r: r.kind == "connected")
    await client.close()
    async with asyncio.timeout(5):
        report = await reporter.wait_for(lambda r: r.kind == "disconnected")
    assert (report.node_id, report.gateway_id) == ("gateway/gw-1/3", "gw-1")


async def test_health_reports_ads_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=ADS_SERVICE)
    response = await stub.Check(request, timeout=5)  # type: ignore[attr-defined]  # typeshed's HealthStub is empty
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_address_in_use_is_refused(
    cache: SnapshotCache, reporter: RecordingReporter, xds_server: XdsServer
) -> None:
    with pytest.raises(RuntimeError, match="Failed to bind"):
        build_xds_server(cache, NodeIdAuthorizer(), reporter, f"127.0.0.1:{xds_server.port}")

"""Snapshot versions and consistency, SnapshotCache publication and change notification."""

import asyncio

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import InconsistentSnapshotError, SnapshotCache
from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.publish import InvalidGatewayError, publish, snapshot_from_ir
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTE
from gateway_xds.translate.translator import translate


def gateway(endpoints: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 8080),), gid: str = "gw-1") -> GatewayIR:
    return GatewayIR(
        gateway_id=gid,
        listeners=(HTTPListener("port-5001", "127.0.0.1", 5001, (VirtualHost("v", ("*",), "svc-p-a"),)),),
        backends=(Backend("svc-p-a", endpoints),),
    )


def test_versions_are_content_hashes_per_type() -> None:
    one = Snapshot(1, translate(gateway()))
    same = Snapshot(7, translate(gateway()))
    moved = Snapshot(2, translate(gateway((Endpoint("127.0.0.1", 9090),))))
    assert all(one.version(t) == same.version(t) for t in PUSH_ORDER)
    assert one.version(ENDPOINT) != moved.version(ENDPOINT)
    assert [one.version(t) == moved.version(t) for t in (CLUSTER, LISTENER, ROUTE)] == [True] * 3
    assert Snapshot.empty().version(CLUSTER) == Snapshot.empty(3).version(LISTENER)


def test_snapshot_is_immutable() -> None:
    snapshot = Snapshot(1, translate(gateway()))
    with pytest.raises(TypeError):
        snapshot.entries(CLUSTER)["other"] = cluster_pb2.Cluster(name="other")  # type: ignore[index]


def test_resources_of_filters_existing_names() -> None:
    snapshot = Snapshot(1, translate(gateway()))
    assert set(snapshot.resources_of(ENDPOINT)) == {"svc-p-a"}
    assert set(snapshot.resources_of(ENDPOINT, {"svc-p-a", "missing"})) == {"svc-p-a"}
    assert snapshot.resources_of(ENDPOINT, set()) == {}
    assert snapshot.required_names(ENDPOINT) == {"svc-p-a"}
    assert snapshot.required_names(ROUTE) == {"port-5001"}


def test_consistency_reports_dangling_references() -> None:
    resources = translate(gateway())
    resources[ROUTE] = {}
    resources[ENDPOINT] = {}
    assert Snapshot(1, resources).consistent() == [
        "listener 'port-5001' refers to missing route configuration 'port-5001'",
        "EDS cluster 'svc-p-a' has no endpoint assignment 'svc-p-a'",
    ]
    resources = translate(gateway())
    resources[CLUSTER] = {}
    assert Snapshot(1, resources).consistent() == [
        "route configuration 'port-5001' refers to missing cluster 'svc-p-a'"
    ]


def test_cache_refuses_inconsistent_snapshot_and_keeps_the_old_one() -> None:
    cache = SnapshotCache()
    good = publish(cache, gateway(), 1)
    resources = translate(gateway())
    resources[ENDPOINT] = {"other": endpoint_pb2.ClusterLoadAssignment(cluster_name="other")}
    with pytest.raises(InconsistentSnapshotError, match="no endpoint assignment") as raised:
        cache.set_snapshot("gw-1", Snapshot(2, resources))
    assert raised.value.errors == ["EDS cluster 'svc-p-a' has no endpoint assignment 'svc-p-a'"]
    assert cache.get("gw-1") is good


def test_snapshot_from_invalid_ir_lists_errors() -> None:
    bad = GatewayIR("gw-1", (HTTPListener("l", "127.0.0.1", 5001, (VirtualHost("v", ("*",), "nope"),)),))
    with pytest.raises(InvalidGatewayError) as raised:
        snapshot_from_ir(bad, 1)
    assert raised.value.errors == ["listener 'l' virtual host 'v': unknown backend 'nope'"]


async def test_wait_for_change_wakes_on_set_and_coalesces() -> None:
    cache = SnapshotCache()
    assert cache.get("gw-1") is None
    waiter = asyncio.create_task(cache.wait_for_change("gw-1", None))
    await asyncio.sleep(0)
    first = publish(cache, gateway(), 1)
    async with asyncio.timeout(1):
        assert await waiter is first
    second = publish(cache, gateway(), 2)
    third = publish(cache, gateway(), 3)
    async with asyncio.timeout(1):
        assert await cache.wait_for_change("gw-1", first) is third
    assert second.revision == 2


async def test_changes_of_other_gateways_do_not_wake() -> None:
    cache = SnapshotCache()
    mine = publish(cache, gateway(), 1)
    waiter = asyncio.create_task(cache.wait_for_change("gw-1", mine))
    publish(cache, gateway(gid="gw-2"), 1)
    await asyncio.sleep(0)
    assert not waiter.done()
    newer = publish(cache, gateway(), 2)
    async with asyncio.timeout(1):
        assert await waiter is newer


async def test_clear_gives_streams_an_empty_snapshot() -> None:
    cache = SnapshotCache()
    seen = publish(cache, gateway(), 4)
    waiter = asyncio.create_task(cache.wait_for_change("gw-1", seen))
    await asyncio.sleep(0)
    cache.clear("gw-1")
    async with asyncio.timeout(1):
        empty = await waiter
    assert empty.is_empty and empty.revision == 4
    assert cache.get("gw-1") is None
    # A stream that missed the wake-up still learns the gateway is gone.
    async with asyncio.timeout(1):
        assert (await cache.wait_for_change("gw-1", seen)).is_empty

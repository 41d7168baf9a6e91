"""The wake check's waiting: released once every connected Envoy of the gateway has the service's
first ready replica, bounded otherwise. The registry is a mirror filled by hand; the Envoys' reports
come through EnvoySync as the xDS server would send them."""

from __future__ import annotations

import asyncio

import pytest

from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import resources_pb2
from gateway_xds.autoscale.wake import Waker
from gateway_xds.envoy_sync import EnvoySync
from gateway_xds.testing.reporters import RecordingReporter


class _Autoscaler:
    """Stands in for the autoscaler, which would call the registry: records what was woken."""

    def __init__(self) -> None:
        self.woken: list[str] = []

    def wake(self, service: resources_pb2.Service) -> None:
        self.woken.append(service.id)


def _mirror() -> RegistryMirror:
    mirror = RegistryMirror()
    service = resources_pb2.Service(id="svc-1", project="main", name="sleepy")
    service.spec.gateway_id = "gw-1"
    mirror.services[service.id] = service
    return mirror


async def test_held_until_every_connected_envoy_routes_to_the_first_replica() -> None:
    mirror, recorded = _mirror(), RecordingReporter()
    sync, autoscaler = EnvoySync(recorded), _Autoscaler()
    waker = Waker(mirror, sync, autoscaler, hold_seconds=10)
    sync.connected("gateway/gw-1/0", "gw-1")
    sync.connected("gateway/gw-1/1", "gw-1")
    held = asyncio.create_task(waker.hold("svc-1"))
    await asyncio.sleep(0)
    assert autoscaler.woken == ["svc-1"] and not held.done()
    mirror.replicas["r-1"] = resources_pb2.Replica(
        id="r-1", service_id="svc-1", ready=True, resource_version=7
    )
    sync.acked("gateway/gw-1/0", "gw-1", 7)
    await asyncio.sleep(0)
    assert not held.done()  # the other Envoy does not route to it yet
    sync.acked("gateway/gw-1/1", "gw-1", 6)
    await asyncio.sleep(0)
    assert not held.done()
    sync.disconnected("gateway/gw-1/1", "gw-1")  # gone: nobody left to wait for
    assert await asyncio.wait_for(held, 5) is True
    assert [r.kind for r in recorded.reports].count("acked") == 2  # forwarded as they came


async def test_the_hold_is_bounded_and_other_gateways_cannot_wake_a_service() -> None:
    mirror, autoscaler = _mirror(), _Autoscaler()
    sync = EnvoySync(RecordingReporter())
    sync.connected("gateway/gw-1/0", "gw-1")
    waker = Waker(mirror, sync, autoscaler, hold_seconds=0.05)
    assert await waker.hold("svc-1", caller_gateway="gw-2") is False
    assert autoscaler.woken == []
    assert await waker.hold("svc-1") is False
    assert await waker.hold("no-such-service") is False
    assert autoscaler.woken == ["svc-1"]


@pytest.mark.parametrize("revision", [3, 4])
def test_all_acked_counts_connected_envoys_only(revision: int) -> None:
    sync = EnvoySync(RecordingReporter())
    assert sync.all_acked("gw-1", revision)
    sync.connected("n0", "gw-1")
    sync.acked("n0", "gw-1", 4)
    assert sync.all_acked("gw-1", revision)
    sync.connected("n1", "gw-1")
    assert not sync.all_acked("gw-1", revision)

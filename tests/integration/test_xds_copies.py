"""Two copies of gateway_xds on one registry (PostgreSQL) and one Redis: one autoscaler scales at a
time, from the requests of Envoys whichever copy they push to, and hands over when its copy stops; a
request held on one copy for a service scaled to zero is let go once the replica the other copy's
autoscaler asked for is ready; the gateway's status shows the Envoys of both copies."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import struct_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.app import XdsApp
from gateway_xds.authz.context import WAKE_SERVICE_ID
from gateway_xds.autoscale.metrics_sink import NODE_HEADER
from gateway_xds.envoy_sync import EnvoySync
from gateway_xds.provider.build import backend_name
from gateway_xds.provider.envoy_reports import RegistryReporter
from gateway_xds.shared.acks import SharedAcks
from gateway_xds.shared.redis import SharedRedis
from tests.integration.registry.conftest import RegistryServer, registry_server  # noqa: F401
from tests.support.otlp import envoy_push
from tests.support.redis import redis_copies

pytestmark = [pytest.mark.real, pytest.mark.parametrize("registry_server", ["postgresql"], indirect=True)]


@dataclass
class XdsCopy:
    app: XdsApp
    stubs: Stubs
    task: asyncio.Task[None]
    channel: grpc.aio.Channel

    @property
    def leads(self) -> bool:
        return self.app.leadership.fence is not None

    async def stop(self) -> None:
        if self.task.done():
            return
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.channel.close()
        await self.stubs.close()


@dataclass
class Tenant:
    project: str
    admin: Stubs
    system: Stubs

    async def apply(self, **config: Any) -> registry_pb2.ApplyResponse:
        struct = struct_pb2.Struct()
        struct.update(config)
        return await self.admin.configurations.Apply(
            registry_pb2.ApplyRequest(project=self.project, configuration=struct)
        )

    async def service(self, name: str) -> resources_pb2.Service:
        return await self.admin.services.Get(registry_pb2.GetRequest(project=self.project, name=name))


@pytest.fixture
async def tenant(registry_server: RegistryServer) -> AsyncIterator[Tenant]:  # noqa: F811
    name = f"p-{secrets.token_hex(4)}"
    admin = registry_server.stubs(await registry_server.add_user(f"u-{name}", name))
    system = registry_server.stubs(registry_server.system_token)
    await Tenant(name, admin, system).apply(type="gateway", name="gw", backend="local", region="local")
    yield Tenant(name, admin, system)
    await admin.close()
    await system.close()


@pytest.fixture
async def copies(registry_server: RegistryServer) -> AsyncIterator[list[XdsCopy]]:  # noqa: F811
    async with redis_copies() as shared:
        started = [await _start_copy(registry_server, shared) for _ in range(2)]
        yield started
        for copy in started:
            await copy.stop()


async def _start_copy(server: RegistryServer, shared: Callable[[], SharedRedis]) -> XdsCopy:
    stubs = server.stubs(server.system_token)
    app = XdsApp.build(stubs, "127.0.0.1:0", shared=shared())
    task = asyncio.create_task(app.run())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    await asyncio.wait_for(channel.channel_ready(), 10)
    return XdsCopy(app, stubs, task, channel)


async def _leader(copies: list[XdsCopy]) -> XdsCopy:
    async with asyncio.timeout(15):
        while True:
            leaders = [copy for copy in copies if copy.leads]
            assert len(leaders) <= 1
            if leaders:
                return leaders[0]
            await asyncio.sleep(0.05)


async def _until(check: Callable[[], Any], copies: list[XdsCopy], seconds: float = 15) -> None:
    """Polls `check` (async, truthy when done), asserting all along that at most one copy leads."""
    async with asyncio.timeout(seconds):
        while not await check():
            assert sum(copy.leads for copy in copies) <= 1
            await asyncio.sleep(0.05)


async def test_one_autoscaler_scales_from_every_copys_envoys_and_hands_over(
    tenant: Tenant, copies: list[XdsCopy]
) -> None:
    scaling = {"metric": "rps", "target": 10, "window": "30s", "scale_up_delay": 0, "scale_down_delay": 600}
    await tenant.apply(type="service", name="web", port=8000, replicas="0..3", scaling=scaling)
    cluster = backend_name(await tenant.service("web"))
    leader = await _leader(copies)
    other = next(copy for copy in copies if copy is not leader)
    pushes = [metrics_service_pb2_grpc.MetricsServiceStub(copy.channel).Export for copy in copies]
    totals = [0.0, 0.0]

    async def push_for(seconds: float, rps_per_envoy: float) -> None:
        """Two Envoys, each pushing to its own copy every 0.2 s."""
        for _ in range(round(seconds / 0.2)):
            for envoy in (0, 1):
                totals[envoy] += rps_per_envoy * 0.2
                request = envoy_push({cluster: round(totals[envoy])})
                await pushes[envoy](request, metadata=((NODE_HEADER, f"gateway/gw/{envoy}"),))
            await asyncio.sleep(0.2)

    async def desired(replicas: int) -> bool:
        return (await tenant.service("web")).status.desired_replicas == replicas

    # 7.5 requests a second through each copy: 15 in all, two replicas of 10 (one copy's alone: one).
    await push_for(2.0, 7.5)
    await _until(lambda: desired(2), copies)
    assert leader.leads and not other.leads
    # The leading copy stops; the other takes the lease and scales on from the same counters.
    # Its Envoys fail over to the other copy and push there.
    await leader.stop()
    assert await _leader([other]) is other
    pushes[:] = [metrics_service_pb2_grpc.MetricsServiceStub(other.channel).Export] * 2
    await push_for(3.0, 100)
    await _until(lambda: desired(3), [other])


async def test_a_request_held_on_one_copy_is_woken_by_the_other_copys_autoscaler(
    tenant: Tenant, copies: list[XdsCopy]
) -> None:
    scaling = {"metric": "rps", "target": 10, "window": "30s", "scale_up_delay": 0, "scale_down_delay": 0}
    await tenant.apply(type="service", name="sleepy", port=8000, replicas="0..2", scaling=scaling)
    service = await tenant.service("sleepy")
    assert service.status.desired_replicas == 0
    leader = await _leader(copies)
    holder = next(copy for copy in copies if copy is not leader)
    check = external_auth_pb2.CheckRequest()
    check.attributes.context_extensions[WAKE_SERVICE_ID] = service.id
    # Wait for the service to reach the holder's mirror (its registry watch).
    await _until(lambda: _sees(holder, service.id), copies)
    held = asyncio.ensure_future(external_auth_pb2_grpc.AuthorizationStub(holder.channel).Check(check))

    async def scaled_up() -> bool:
        return (await tenant.service("sleepy")).status.desired_replicas == 1

    await _until(scaled_up, copies)
    assert not held.done()  # no replica yet: still held
    register = registry_pb2.RegisterReplicaRequest(
        project=tenant.project,
        service="sleepy",
        id=f"{tenant.project}-r0",
        address="10.0.0.9:8000",
        ready=True,
    )
    await tenant.system.replicas.Register(register)
    async with asyncio.timeout(10):
        answer = await held
    assert answer.status.code == grpc.StatusCode.OK.value[0]
    # The leader does not undo the wake: the replica stays for at least a window, however quiet.
    for _ in range(3):
        await asyncio.sleep(1.0)
        assert await scaled_up()


async def _sees(copy: XdsCopy, service_id: str) -> bool:
    return service_id in copy.app.provider.mirror.services


async def test_the_gateway_shows_the_envoys_of_every_copy(
    tenant: Tenant,
    registry_server: RegistryServer,  # noqa: F811
) -> None:
    """Each copy reports the gateway's whole list: a copy's report never hides the other's Envoys,
    and an Envoy that moved to another copy stays shown as that copy has it, whatever the copy it
    left reports late."""
    gateway = await tenant.admin.gateways.Get(registry_pb2.GetRequest(project=tenant.project, name="gw"))
    nodes = [f"gateway/{gateway.id}/{index}" for index in range(3)]
    stubs = [registry_server.stubs(registry_server.system_token) for _ in range(2)]
    async with redis_copies() as shared:
        reporters = [RegistryReporter(copy_stubs) for copy_stubs in stubs]
        acks = [SharedAcks(shared(), reporter) for reporter in reporters]
        for reporter, copy_acks in zip(reporters, acks, strict=True):
            reporter.others = copy_acks
        running = [asyncio.create_task(reporter.run()) for reporter in reporters]
        running += [asyncio.create_task(copy_acks.run()) for copy_acks in acks]
        a, b = (EnvoySync(copy_acks) for copy_acks in acks)

        async def shown() -> dict[str, tuple[bool, int]]:
            got = await tenant.admin.gateways.Get(registry_pb2.GetRequest(project=tenant.project, name="gw"))
            return {envoy.node_id: (envoy.connected, envoy.acked_revision) for envoy in got.status.envoys}

        async def until(expected: dict[str, tuple[bool, int]]) -> None:
            async with asyncio.timeout(10):
                while await shown() != expected:
                    await asyncio.sleep(0.05)

        try:
            for sync, node, revision in ((a, nodes[0], 5), (b, nodes[1], 6)):
                sync.connected(node, gateway.id)
                sync.acked(node, gateway.id, revision)
            await until({nodes[0]: (True, 5), nodes[1]: (True, 6)})
            # Node 1's stream to B broke and it streams from A; B has not noticed yet.
            a.connected(nodes[1], gateway.id)
            a.acked(nodes[1], gateway.id, 7)
            await until({nodes[0]: (True, 5), nodes[1]: (True, 7)})
            # B reports (a new Envoy of its own), still taking node 1 for its own, then notices it gone.
            b.connected(nodes[2], gateway.id)
            await until({nodes[0]: (True, 5), nodes[1]: (True, 7), nodes[2]: (True, 0)})
            b.disconnected(nodes[1], gateway.id)
            b.acked(nodes[2], gateway.id, 7)
            await until({nodes[0]: (True, 5), nodes[1]: (True, 7), nodes[2]: (True, 7)})
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for copy_stubs in stubs:
                await copy_stubs.close()

"""A service is live once every connected Envoy of its gateway has applied its latest change (its own
or a replica's), as gateway_xds reports them; Follow tells each change of that (and of the gateway)
without polling, to the service's project only. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gatehouse.v1 import registry_pb2, resources_pb2
from tests.integration.registry.conftest import RegistryServer, Tenant
from tests.integration.registry.test_registry_api import apply, expect_error, local_gateway

pytestmark = pytest.mark.real


def _envoys(gateway: resources_pb2.Gateway, *acked: int) -> list[resources_pb2.EnvoyStatus]:
    """Connected Envoys of the gateway, the i-th having applied revision acked[i]."""
    return [
        resources_pb2.EnvoyStatus(
            node_id=f"gateway/{gateway.id}/{i}", connected=True, acked_revision=revision
        )
        for i, revision in enumerate(acked)
    ]


async def test_follow_tells_when_a_service_is_live_on_every_envoy(
    tenants: tuple[Tenant, Tenant], registry_server: RegistryServer
) -> None:
    one, two = tenants
    gateway = (await apply(one, **local_gateway("gw"))).gateway
    service = (await apply(one, type="service", name="web", gateway="gw", port="8080:80")).service
    system = registry_server.stubs(registry_server.system_token)

    async def report(envoys: list[resources_pb2.EnvoyStatus]) -> None:
        request = registry_pb2.ReportEnvoysRequest(gateway_id=gateway.id, envoys=envoys)
        await system.gateways.ReportEnvoys(request)

    follow = one.api.services.Follow(registry_pb2.GetRequest(project=one.project, name="web"), timeout=30)
    updates = follow.__aiter__()

    async def next_live() -> resources_pb2.Liveness:
        return (await asyncio.wait_for(updates.__anext__(), timeout=10)).status.live

    try:
        first = await next_live()
        assert (first.live, first.envoys, first.revision) == (False, 0, service.resource_version)
        await report(_envoys(gateway, service.resource_version, service.resource_version - 1))
        assert (await next_live()) == resources_pb2.Liveness(
            live=False, revision=service.resource_version, envoys=2, applied=1
        )
        await report(_envoys(gateway, service.resource_version, service.resource_version))
        assert (await next_live()).live
        # A replica is a change of the service too: not live until the Envoys have it.
        replica = await system.replicas.Register(
            registry_pb2.RegisterReplicaRequest(
                project=one.project,
                service="web",
                id="web-0",
                address="10.9.0.1:80",
                ready=True,
                runner="test",
            )
        )
        changed = await next_live()
        while changed.revision < replica.resource_version:
            changed = await next_live()
        assert not changed.live and changed.applied == 0
        await report(_envoys(gateway, changed.revision, changed.revision))
        assert (await next_live()).live
        # The same name in another project is not this one, and this one is not theirs to follow.
        others = two.api.services.Follow(registry_pb2.GetRequest(project=one.project, name="web"), timeout=10)
        await expect_error(grpc.StatusCode.PERMISSION_DENIED, others.read())
    finally:
        follow.cancel()
        await system.close()


async def test_follow_ends_when_the_service_is_deleted(tenants: tuple[Tenant, Tenant]) -> None:
    one, _ = tenants
    await apply(one, **local_gateway("gw"))
    await apply(one, type="service", name="brief", gateway="gw", port="8081:80")
    follow = one.api.services.Follow(registry_pb2.GetRequest(project=one.project, name="brief"), timeout=30)
    first = await follow.read()
    assert isinstance(first, resources_pb2.Service) and first.name == "brief"
    await one.api.services.Delete(registry_pb2.DeleteRequest(project=one.project, name="brief"))
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        while True:
            await asyncio.wait_for(follow.read(), timeout=10)
    assert ended.value.code() == grpc.StatusCode.NOT_FOUND

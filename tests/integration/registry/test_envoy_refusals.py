"""What a gateway's Envoys refuse, as the registry shows it: on the gateway's message (the ERROR column)
and on the service whose own resources they refuse, read through the gRPC API on SQLite and
PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from gatehouse.v1 import registry_pb2, resources_pb2
from tests.integration.registry.conftest import RegistryServer, Tenant
from tests.integration.registry.test_registry_api import apply, local_gateway

pytestmark = pytest.mark.real

REASON = "cannot bind '127.0.0.2:5001': Address already in use"
MESSAGE = f"Error adding/updating listener(s) port-5001: {REASON}"
FAILED = resources_pb2.SERVICE_STATE_FAILED


@pytest.fixture
async def tenant(registry_server: RegistryServer) -> AsyncIterator[Tenant]:
    name = f"r-{secrets.token_hex(4)}"
    stubs = registry_server.stubs(await registry_server.add_user(f"u-{name}", name))
    yield Tenant(name, stubs)
    await stubs.close()


def envoy(acked: int, connected: bool = True, *refused: str) -> resources_pb2.EnvoyStatus:
    return resources_pb2.EnvoyStatus(
        node_id="gateway/gw/0",
        connected=connected,
        acked_revision=acked,
        rejected=f"config rejected: {MESSAGE}" if refused else "",
        rejected_resources=[
            resources_pb2.RejectedResource(type="Listener", name=name, reason=REASON) for name in refused
        ],
    )


async def test_a_refused_listener_fails_its_service_only_and_shows_on_the_gateway(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    gateway = (await apply(tenant, **local_gateway("gw"))).gateway
    mapped = (await apply(tenant, type="service", name="mapped", gateway="gw", port="5001:8000")).service
    other = (await apply(tenant, type="service", name="other", gateway="gw", port="5002:8000")).service
    system = registry_server.stubs(registry_server.system_token)

    async def report(*envoys: resources_pb2.EnvoyStatus) -> None:
        request = registry_pb2.ReportEnvoysRequest(gateway_id=gateway.id, envoys=envoys)
        await system.gateways.ReportEnvoys(request)

    async def service(name: str) -> resources_pb2.Service:
        return await tenant.api.services.Get(registry_pb2.GetRequest(project=tenant.project, name=name))

    async def gateways() -> list[resources_pb2.Gateway]:
        listed = await tenant.api.gateways.List(registry_pb2.ListGatewaysRequest(project=tenant.project))
        got = await tenant.api.gateways.Get(registry_pb2.GetRequest(project=tenant.project, name="gw"))
        return [*listed.gateways, got]

    newest = max(mapped.resource_version, other.resource_version)
    try:
        await report(envoy(newest, True, "port-5001"))
        refused = await service("mapped")
        assert refused.status.state == FAILED
        assert refused.status.message == f'gateway "gw" refused listener port-5001: {REASON}'
        listed = await tenant.api.services.List(registry_pb2.ListServicesRequest(project=tenant.project))
        assert {s.name: s.status.state == FAILED for s in listed.services} == {"mapped": True, "other": False}
        assert (await service("other")).status.state != FAILED
        for shown in await gateways():
            assert shown.status.message == f"config rejected: {MESSAGE}"
            (reported,) = shown.status.envoys
            assert [(r.type, r.name, r.reason) for r in reported.rejected_resources] == [
                ("Listener", "port-5001", REASON)
            ]
        # An Envoy that has not answered the service's revision yet, or is gone, says nothing of it.
        await report(envoy(mapped.resource_version - 1, True, "port-5001"))
        assert (await service("mapped")).status.state != FAILED
        await report(envoy(newest, False, "port-5001"))
        assert (await service("mapped")).status.state != FAILED
        assert all(not g.status.message for g in await gateways())
        # Nothing refused any more: nothing shown.
        await report(envoy(newest, True))
        assert (await service("mapped")).status.state != FAILED
        assert all(not g.status.message for g in await gateways())
    finally:
        await system.close()

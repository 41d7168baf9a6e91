"""Resource events in the registry, on SQLite and PostgreSQL: who made each write, an Envoy's refusal
and its end, the last 50 per resource, old ones expired, and a project's events its members' only
(two tenants, same-named gateways)."""

from __future__ import annotations

import datetime

import grpc
import pytest

from gatehouse.v1 import registry_pb2, resources_pb2
from services.registry import events
from services.registry.models import ResourceEventRow, utcnow
from tests.integration.registry.conftest import RegistryServer, Tenant
from tests.integration.registry.test_registry_api import apply, local_gateway

pytestmark = pytest.mark.real


async def _events(tenant: Tenant, **filters: str) -> list[registry_pb2.ResourceEvent]:
    request = registry_pb2.ListEventsRequest(project=tenant.project, limit=500, **filters)
    return list((await tenant.api.events.List(request)).events)


async def test_writes_name_their_principal_and_refusals_come_and_go(
    tenants: tuple[Tenant, Tenant], registry_server: RegistryServer
) -> None:
    one, two = tenants
    gateway = (await apply(one, **local_gateway("gw"))).gateway
    await apply(two, **local_gateway("gw"))
    system = registry_server.stubs(registry_server.system_token)

    async def report(rejected: str) -> None:
        envoy = resources_pb2.EnvoyStatus(
            node_id=f"gateway/{gateway.id}/0", connected=True, rejected=rejected
        )
        await system.gateways.ReportEnvoys(
            registry_pb2.ReportEnvoysRequest(gateway_id=gateway.id, envoys=[envoy])
        )

    await report("config rejected: cannot bind")
    await report("config rejected: cannot bind")  # the same refusal again is no new event
    await report("")
    await system.close()
    mine = await _events(one, gateway="gw")
    assert [(e.reason, e.type) for e in mine[:2]] == [
        ("EnvoyAccepted", "Normal"),
        ("EnvoyRejected", "Warning"),
    ]
    assert mine[1].message == f"gateway/{gateway.id}/0: config rejected: cannot bind"
    assert (mine[-1].reason, mine[-1].principal) == ("Applied", f"user:u-{one.project}")
    theirs = await _events(two)
    assert {e.project for e in theirs} == {two.project}
    assert not [e for e in theirs if e.reason.startswith("Envoy")]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await two.api.events.List(registry_pb2.ListEventsRequest(project=one.project))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_resource_keeps_its_last_events_and_old_ones_expire(
    tenants: tuple[Tenant, Tenant], registry_server: RegistryServer
) -> None:
    one, _ = tenants
    gateway = (await apply(one, **local_gateway("busy"))).gateway
    system = registry_server.stubs(registry_server.system_token)
    for step in range(events.MAX_PER_RESOURCE + 10):
        status = resources_pb2.GatewayStatus(
            state=resources_pb2.GATEWAY_STATE_PROVISIONING, message=f"step {step}"
        )
        await system.gateways.UpdateStatus(
            registry_pb2.UpdateGatewayStatusRequest(id=gateway.id, status=status)
        )
    await system.close()
    kept = await _events(one, gateway="busy")
    assert len(kept) == events.MAX_PER_RESOURCE
    assert kept[0].message == f"step {events.MAX_PER_RESOURCE + 9}" and kept[0].principal == "gatehouse"

    old = utcnow() - datetime.timedelta(days=events.KEPT_DAYS + 1)
    async with registry_server.registry.ctx.db.write() as session:
        session.add(
            ResourceEventRow(
                project_id=one.project,
                kind="gateway",
                resource_id="gone",
                name="gone",
                type="Normal",
                reason="Deleted",
                message="",
                principal="gatehouse",
                created_at=old,
            )
        )
    assert [e for e in await _events(one) if e.name == "gone"]
    async with registry_server.registry.ctx.db.write() as session:
        await events.expire(session)
    left = await _events(one)
    assert not [e for e in left if e.name == "gone"] and len(left) >= events.MAX_PER_RESOURCE

"""The registry through its gRPC API, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from sqlalchemy import select

from gatehouse.v1 import registry_pb2, resources_pb2
from services.registry.models import SecretRow
from tests.integration.registry.conftest import RegistryServer, Tenant

pytestmark = pytest.mark.real


@pytest.fixture
async def tenant(registry_server: RegistryServer) -> AsyncIterator[Tenant]:
    """A project of its own (and its admin) for each test."""
    name = f"p-{secrets.token_hex(4)}"
    token = await registry_server.add_user(f"u-{name}", name)
    stubs = registry_server.stubs(token)
    yield Tenant(name, stubs)
    await stubs.close()


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(data)
    return result


async def apply(tenant: Tenant, source: str = "", **config: Any) -> registry_pb2.ApplyResponse:
    request = registry_pb2.ApplyRequest(project=tenant.project, configuration=_struct(config), source=source)
    return await tenant.api.configurations.Apply(request)


async def expect_error(code: grpc.StatusCode, call: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


def local_gateway(name: str, **extra: Any) -> dict[str, Any]:
    return {"type": "gateway", "name": name, "backend": "local", "region": "local", **extra}


async def test_every_call_needs_a_valid_token(registry_server: RegistryServer) -> None:
    for token in ("", "gh_not-a-token"):
        stubs = registry_server.stubs(token)
        request = registry_pb2.ListGatewaysRequest(project="main")
        await expect_error(grpc.StatusCode.UNAUTHENTICATED, stubs.gateways.List(request))
        await stubs.close()


async def test_projects_are_isolated(tenant: Tenant, registry_server: RegistryServer) -> None:
    await apply(tenant, **local_gateway("private-gw"))
    other_token = await registry_server.add_user(f"other-{tenant.project}", f"o-{tenant.project}")
    other = registry_server.stubs(other_token)
    get = registry_pb2.GetRequest(project=tenant.project, name="private-gw")
    details = await expect_error(grpc.StatusCode.PERMISSION_DENIED, other.gateways.Get(get))
    assert tenant.project in details
    # Gatehouse's own calls are refused to users.
    await expect_error(
        grpc.StatusCode.PERMISSION_DENIED, tenant.api.watch.Snapshot(registry_pb2.SnapshotRequest())
    )
    await other.close()


async def test_first_gateway_is_default_and_default_moves(tenant: Tenant) -> None:
    first = (await apply(tenant, **local_gateway("gw-one"))).gateway
    second = (await apply(tenant, **local_gateway("gw-two"))).gateway
    assert first.spec.default and not second.spec.default
    assert first.status.state == resources_pb2.GATEWAY_STATE_SUBMITTED
    await apply(tenant, **local_gateway("gw-two", default=True))
    listed = await tenant.api.gateways.List(registry_pb2.ListGatewaysRequest(project=tenant.project))
    assert {gw.name: gw.spec.default for gw in listed.gateways} == {"gw-one": False, "gw-two": True}


async def test_plan_and_in_place_update(tenant: Tenant) -> None:
    created = (await apply(tenant, **local_gateway("gw-plan"))).gateway
    request = registry_pb2.ApplyRequest(
        project=tenant.project, configuration=_struct(local_gateway("gw-plan"))
    )
    assert (await tenant.api.configurations.GetPlan(request)).action == "none"
    request.configuration.CopyFrom(
        _struct(local_gateway("gw-plan", domain=f"*.{tenant.project.upper()}.Example.com"))
    )
    plan = await tenant.api.configurations.GetPlan(request)
    assert plan.action == "update" and any("domain" in change for change in plan.changes)
    request.expected_version = plan.current_version
    updated = (await tenant.api.configurations.Apply(request)).gateway
    assert updated.spec.domain == f"{tenant.project}.example.com"
    assert updated.generation == created.generation + 1
    # The plan is now stale.
    details = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, tenant.api.configurations.Apply(request)
    )
    assert "--force" in details
    request.configuration.CopyFrom(_struct(local_gateway("gw-plan", backend="aws", region="eu-west-1")))
    assert (await tenant.api.configurations.GetPlan(request)).action == "recreate"
    request.expected_version = 0
    details = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, tenant.api.configurations.Apply(request)
    )
    assert "delete it and apply again" in details


async def test_a_nameless_configuration_is_found_again_by_its_source(tenant: Tenant) -> None:
    config = {"type": "gateway", "backend": "local", "region": "local"}
    first = (await apply(tenant, source="/x/gateway.dstack.yml", **config)).gateway
    again = (await apply(tenant, source="/x/gateway.dstack.yml", **config)).gateway
    assert first.name.startswith("gatehouse-gateway-") and again.id == first.id


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "gateway", "name": "g", "backend": "local", "region": "local"}, "not a valid name"),
        (local_gateway("gw-mars", backend="mars"), "not a backend"),
        ({"type": "gateway", "name": "gw-nr", "backend": "local"}, "`region` is required"),
        (local_gateway("gw-typo", regoin="x"), "did you mean `region`"),
        (
            local_gateway("gw-router", router={"type": "sglang"}),
            "routing configuration now lives on services",
        ),
        (
            local_gateway("gw-pub", backend="azure", region="x", public_ip=False, certificate=None),
            "private gateways",
        ),
        (local_gateway("gw-le", backend="aws", region="x", public_ip=False), "need a public IP"),
        (local_gateway("gw-tag", tags={"bad key!": "v"}), "tag key"),
        ({"type": "service", "name": "svc-r", "port": 80, "replicas": "1..3"}, "add `scaling`"),
        (
            {"type": "service", "name": "svc-rl", "port": 80, "rate_limits": [{"prefix": "/", "rps": 1}] * 2},
            "more than once",
        ),
        ({"type": "service", "name": "svc-rps", "port": 80, "rate_limits": [{"rps": 0.001}]}, "rps"),
        (
            {"type": "service", "name": "svc-rs", "port": 80, "rate_limits": [{"rps": 1, "scope": "all"}]},
            "`rate_limits[0].scope`: use local or global, not 'all'",
        ),
        (local_gateway("gw-acm", certificate={"type": "acm", "arn": "arn:x"}), "aws backend only"),
        (local_gateway("gw-it", instance_type="t3.large"), "no instance types"),
        ({"type": "service", "name": "svc-port", "port": "80:80:80"}, "is not a port"),
        ({"type": "service", "name": "svc-range", "port": 70000}, "out of range"),
        ({"type": "job", "name": "x"}, "`type` must be gateway or service"),
    ],
)
async def test_invalid_configurations(tenant: Tenant, config: dict[str, Any], message: str) -> None:
    details = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, apply(tenant, **config))
    assert message in details


async def test_service_gateway_references(tenant: Tenant, registry_server: RegistryServer) -> None:
    details = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, apply(tenant, type="service", name="lonely", port=8000)
    )
    assert "no default gateway" in details
    gateway = (await apply(tenant, **local_gateway("gw-ref"))).gateway
    system = registry_server.stubs(registry_server.system_token)
    status = resources_pb2.GatewayStatus(state=resources_pb2.GATEWAY_STATE_RUNNING, hostname="10.1.2.3")
    await system.gateways.UpdateStatus(registry_pb2.UpdateGatewayStatusRequest(id=gateway.id, status=status))
    await system.close()
    by_default = (await apply(tenant, type="service", name="s-default", port="7001:8000")).service
    by_name = (await apply(tenant, type="service", name="s-name", gateway="gw-ref", port="7002:8000")).service
    by_address = (
        await apply(tenant, type="service", name="s-addr", gateway="10.1.2.3", port="7003:8000")
    ).service
    qualified = f"{tenant.project}/gw-ref"
    by_project = (
        await apply(tenant, type="service", name="s-proj", gateway=qualified, port="7004:8000")
    ).service
    assert {s.spec.gateway_id for s in (by_default, by_name, by_address, by_project)} == {gateway.id}
    assert list(by_address.status.urls) == ["http://10.1.2.3:7003"]
    details = await expect_error(
        grpc.StatusCode.NOT_FOUND, apply(tenant, type="service", name="s-x", gateway="10.9.9.9", port=8000)
    )
    assert "10.9.9.9" in details
    eighty = (await apply(tenant, type="service", name="s-80", gateway="gw-ref", port=8000)).service
    assert eighty.spec.gateway_port == 80 and list(eighty.status.urls) == ["http://10.1.2.3"]


async def test_domain_mode_and_https_rules(tenant: Tenant) -> None:
    domain = f"{tenant.project}.example.net"
    await apply(tenant, **local_gateway("gw-dom", domain=domain))
    service = (await apply(tenant, type="service", name="chat", gateway="gw-dom", port=8000)).service
    assert service.spec.hostname == f"chat.{domain}"
    assert list(service.status.urls) == [f"https://chat.{domain}"]
    await apply(tenant, **local_gateway("gw-plain", domain=f"{tenant.project}.plain.dev", certificate=None))
    details = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        apply(tenant, type="service", name="tls", gateway="gw-plain", port=8000),
    )
    assert "certificate: null" in details
    auto = (
        await apply(tenant, type="service", name="auto", gateway="gw-plain", port=8000, https="auto")
    ).service
    assert list(auto.status.urls) == [f"http://auto.{tenant.project}.plain.dev"]


async def test_concurrent_applies_for_one_port_have_one_winner(tenant: Tenant) -> None:
    await apply(tenant, **local_gateway("gw-race"))
    attempts = [
        apply(tenant, type="service", name=f"racer-{i}", gateway="gw-race", port="9100:8000")
        for i in range(8)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    winners = [r for r in results if isinstance(r, registry_pb2.ApplyResponse)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and len(losers) == 7
    assert all(loser.code() == grpc.StatusCode.ALREADY_EXISTS for loser in losers)
    holder = winners[0].service.name
    assert all(
        holder in (loser.details() or "") or "concurrent" in (loser.details() or "") for loser in losers
    )


async def test_secrets_are_encrypted_listed_by_name_and_interpolated(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    secrets_api = tenant.api.secrets
    await secrets_api.Add(
        registry_pb2.AddSecretRequest(project=tenant.project, name="GATEWAY_IP", value="10.7.7.7")
    )
    listed = await secrets_api.List(registry_pb2.ListSecretsRequest(project=tenant.project))
    assert [s.name for s in listed.secrets] == ["GATEWAY_IP"]
    assert "10.7.7.7" not in str(listed)
    async with registry_server.registry.ctx.db.read() as session:
        stored = (
            await session.execute(select(SecretRow).where(SecretRow.project_id == tenant.project))
        ).scalar_one()
    assert b"10.7.7.7" not in stored.value_encrypted
    gateway = (await apply(tenant, **local_gateway("gw-secret"))).gateway
    system = registry_server.stubs(registry_server.system_token)
    status = resources_pb2.GatewayStatus(state=resources_pb2.GATEWAY_STATE_RUNNING, hostname="10.7.7.7")
    await system.gateways.UpdateStatus(registry_pb2.UpdateGatewayStatusRequest(id=gateway.id, status=status))
    await system.close()
    service = (
        await apply(
            tenant, type="service", name="via-secret", gateway="${{ secrets.GATEWAY_IP }}", port="5001:8000"
        )
    ).service
    assert service.spec.gateway_id == gateway.id
    details = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        apply(tenant, type="service", name="nope", gateway="${{ secrets.MISSING }}", port=8000),
    )
    assert "MISSING" in details


async def test_list_then_watch_sees_every_change_once_in_order(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    system = registry_server.stubs(registry_server.system_token)
    snapshot = await system.watch.Snapshot(registry_pb2.SnapshotRequest())
    stream = system.watch.Watch(registry_pb2.WatchRequest(since_revision=snapshot.revision))
    await apply(tenant, **local_gateway("gw-watch"))
    await apply(tenant, type="service", name="watched", gateway="gw-watch", port="9200:8000")
    await tenant.api.services.Delete(registry_pb2.DeleteRequest(project=tenant.project, name="watched"))
    seen: list[registry_pb2.WatchEvent] = []
    while len([e for e in seen if e.WhichOneof("object") == "service"]) < 2:
        event = await asyncio.wait_for(stream.read(), 10)
        assert isinstance(event, registry_pb2.WatchEvent)
        seen.append(event)
    stream.cancel()
    revisions = [event.revision for event in seen]
    assert revisions == sorted(set(revisions)) and revisions[0] == snapshot.revision + 1
    mine = [
        (e.WhichOneof("object"), e.type)
        for e in seen
        if getattr(e, e.WhichOneof("object")).project == tenant.project
    ]
    assert mine[0] == ("gateway", registry_pb2.EVENT_TYPE_PUT)
    assert ("service", registry_pb2.EVENT_TYPE_PUT) in mine and mine[-1] == (
        "service",
        registry_pb2.EVENT_TYPE_DELETE,
    )
    await system.close()


async def test_a_compacted_revision_asks_for_a_new_list(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    from services.registry import feed

    async with registry_server.registry.ctx.db.write() as session:
        await feed.compact(session, keep=1)
    await apply(tenant, **local_gateway("gw-compact"))
    system = registry_server.stubs(registry_server.system_token)
    stream = system.watch.Watch(registry_pb2.WatchRequest(since_revision=0))
    await expect_error(grpc.StatusCode.OUT_OF_RANGE, stream.read())
    await system.close()


async def test_replicas_register_and_unregister(tenant: Tenant) -> None:
    await apply(tenant, **local_gateway("gw-rep"))
    await apply(tenant, type="service", name="rep", gateway="gw-rep", port="9300:8000")
    register = registry_pb2.RegisterReplicaRequest(
        project=tenant.project,
        service="rep",
        id="rep-ext-0",
        address="10.0.0.5:8000",
        ready=True,
        runner="ext",
    )
    await tenant.api.replicas.Register(register)
    service = await tenant.api.services.Get(registry_pb2.GetRequest(project=tenant.project, name="rep"))
    assert service.status.ready_replicas == 1
    register.address = "nonsense"
    await expect_error(grpc.StatusCode.INVALID_ARGUMENT, tenant.api.replicas.Register(register))
    await tenant.api.replicas.Unregister(registry_pb2.UnregisterReplicaRequest(id="rep-ext-0"))
    service = await tenant.api.services.Get(registry_pb2.GetRequest(project=tenant.project, name="rep"))
    assert service.status.ready_replicas == 0


async def test_gateway_delete_is_refused_while_used_and_finalized_by_the_provisioner(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    gateway = (await apply(tenant, **local_gateway("gw-del"))).gateway
    await apply(tenant, type="service", name="user", gateway="gw-del", port="9400:8000")
    delete = registry_pb2.DeleteRequest(project=tenant.project, name="gw-del")
    details = await expect_error(grpc.StatusCode.FAILED_PRECONDITION, tenant.api.gateways.Delete(delete))
    assert "user" in details
    delete.force = True
    deleting = await tenant.api.gateways.Delete(delete)
    assert deleting.status.state == resources_pb2.GATEWAY_STATE_DELETING
    system = registry_server.stubs(registry_server.system_token)
    await system.gateways.FinalizeDelete(registry_pb2.FinalizeRequest(id=gateway.id))
    await system.close()
    get = registry_pb2.GetRequest(project=tenant.project, name="gw-del")
    await expect_error(grpc.StatusCode.NOT_FOUND, tenant.api.gateways.Get(get))


async def test_a_domain_belongs_to_one_gateway_and_moving_it_moves_the_services(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    domain = f"{tenant.project}.owned.test"
    await apply(tenant, **local_gateway("gw-owner", domain=domain))
    other_token = await registry_server.add_user(f"thief-{tenant.project}", f"t-{tenant.project}")
    thief = Tenant(f"t-{tenant.project}", registry_server.stubs(other_token))
    details = await expect_error(
        grpc.StatusCode.ALREADY_EXISTS, apply(thief, **local_gateway("gw-thief", domain=domain))
    )
    assert f"domain {domain} belongs to another project" in details
    # The domain contains the owner's project name; the rest of the message names nothing of theirs.
    rest = details.replace(domain, "")
    assert tenant.project not in rest and "gw-owner" not in rest
    second = await apply(
        tenant, **local_gateway("gw-owner-private", domain=domain, public_ip=False, certificate=None)
    )
    assert second.gateway.spec.domain == domain  # the owner may have several gateways on it
    await thief.api.close()
    service = (await apply(tenant, type="service", name="moving", gateway="gw-owner", port=8000)).service
    assert service.spec.hostname == f"moving.{domain}"
    await apply(tenant, **local_gateway("gw-owner", domain=f"new.{domain}"))
    moved = await tenant.api.services.Get(registry_pb2.GetRequest(project=tenant.project, name="moving"))
    assert moved.spec.hostname == f"moving.new.{domain}"

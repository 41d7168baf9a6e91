"""Gateway ports a service may not map, and conflicts that name nothing of another project: through
the gRPC API, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from gatehouse.v1 import registry_pb2, resources_pb2
from services.common.settings import Settings
from tests.integration.registry.conftest import RegistryServer, Tenant
from tests.integration.registry.test_registry_api import apply, expect_error, local_gateway

pytestmark = pytest.mark.real


@pytest.fixture
async def two(registry_server: RegistryServer) -> AsyncIterator[tuple[Tenant, Tenant]]:
    """Two projects with an admin each; the second project's admin is also a member of the first, so
    it may put services on the first project's gateways."""
    server_admin = registry_server.stubs()
    made = []
    for prefix in ("own", "oth"):
        name = f"{prefix}-{secrets.token_hex(4)}"
        made.append(Tenant(name, registry_server.stubs(await registry_server.add_user(f"u-{name}", name))))
    owner, other = made
    await server_admin.projects.SetMember(
        registry_pb2.SetMemberRequest(project=owner.project, user=f"u-{other.project}", role="member")
    )
    await server_admin.close()
    yield owner, other
    for tenant in made:
        await tenant.api.close()


async def test_mapping_a_reserved_port_is_refused(
    two: tuple[Tenant, Tenant], registry_server: RegistryServer
) -> None:
    settings = Settings.from_env()
    owner, other = two
    await apply(owner, **local_gateway("gw-new"))
    reserved = {
        settings.api_port: "API port",
        settings.xds_port: "xDS port",
        settings.join_port: "join port",
        settings.local_https_port: "the gateway's HTTPS port",
    }
    if settings.local_http_port != 80:
        reserved[settings.local_http_port] = "the gateway's HTTP port"
    for tenant in (owner, other):
        for port, why in reserved.items():
            service = {
                "type": "service",
                "name": "svc",
                "gateway": f"{owner.project}/gw-new",
                "port": f"{port}:8000",
            }
            details = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, apply(tenant, **service))
            assert f"gateway port {port} is reserved" in details and why in details and "\n" not in details
    # Once the gateway reports its own ports, those are the ones reserved.
    reported = (await apply(owner, **local_gateway("gw-up"))).gateway
    system = registry_server.stubs(registry_server.system_token)
    status = resources_pb2.GatewayStatus(
        state=resources_pb2.GATEWAY_STATE_RUNNING, listen_address="127.0.0.9", http_port=8123, https_port=8124
    )
    await system.gateways.UpdateStatus(registry_pb2.UpdateGatewayStatusRequest(id=reported.id, status=status))
    await system.close()
    for port in (8123, 8124):
        service = {"type": "service", "name": "up", "gateway": "gw-up", "port": f"{port}:8000"}
        details = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, apply(owner, **service))
        assert f"gateway port {port} is reserved" in details
    # `port: 8000` alone is the HTTP listener itself, wherever it binds.
    eighty = (await apply(owner, type="service", name="eighty", gateway="gw-up", port=8000)).service
    assert eighty.spec.gateway_port == 80


async def test_conflicts_with_another_projects_service_name_neither(two: tuple[Tenant, Tenant]) -> None:
    owner, other = two
    domain = f"d{secrets.token_hex(4)}.ports.test"
    await apply(owner, **local_gateway("gw-shared"))
    await apply(owner, **local_gateway("gw-named", domain=domain))
    pairs = (("hidden-one", 7301, "chat-one"), ("hidden-two", 7302, "chat-two"))
    for name, port, chat in pairs:
        await apply(owner, type="service", name=name, gateway="gw-shared", port=f"{port}:8000")
        await apply(owner, type="service", name=chat, gateway="gw-named", port=8000)
    for name, port, chat in pairs:
        shared = f"{owner.project}/gw-shared"
        taken: dict[str, Any] = {"type": "service", "name": "mine", "gateway": shared, "port": f"{port}:8000"}
        details = await expect_error(grpc.StatusCode.ALREADY_EXISTS, apply(other, **taken))
        assert details.startswith(f'port {port} of gateway "gw-shared" is taken: ') and "\n" not in details
        assert "hidden" not in details and owner.project not in details
        # Within its own project, the holder is named.
        same: dict[str, Any] = {**taken, "gateway": "gw-shared", "name": "again"}
        assert f'service "{name}"' in await expect_error(grpc.StatusCode.ALREADY_EXISTS, apply(owner, **same))
        named: dict[str, Any] = {
            "type": "service",
            "name": chat,
            "gateway": f"{owner.project}/gw-named",
            "port": 8000,
        }
        details = await expect_error(grpc.StatusCode.ALREADY_EXISTS, apply(other, **named))
        assert details.startswith(f'{chat}.{domain} is taken on gateway "gw-named": ')
        assert "service" not in details.partition(":")[0] and owner.project not in details

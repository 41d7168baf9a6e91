"""`Backends.Put` from a project admin stores inline credentials with public endpoints only: every
configuration that would make the server read its files, run a command, use its own cloud identity
or reach an internal address is refused with INVALID_ARGUMENT in one line, and nothing is stored.
Each project's configuration is its own."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from sqlalchemy import select

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from services.registry.models import BackendConfigRow
from tests.integration.registry.conftest import RegistryServer
from tests.support.backend_attacks import (
    FILES_AND_COMMANDS,
    INTERNAL,
    SERVICE_ACCOUNT,
    aws,
    azure,
    endpoint_configs,
    gcp,
    kubeconfig,
    kubernetes,
)

pytestmark = pytest.mark.real

GOOD = {"aws": aws(), "gcp": gcp(SERVICE_ACCOUNT), "azure": azure(), "kubernetes": kubernetes(kubeconfig())}
ATTACKS = FILES_AND_COMMANDS + [
    (raw, expected) for url, expected in INTERNAL for raw, _ in endpoint_configs(url)
]


@dataclass
class Tenant:
    project: str
    api: Stubs


async def new_tenant(registry_server: RegistryServer) -> Tenant:
    name = f"p-{secrets.token_hex(4)}"
    token = await registry_server.add_user(f"u-{name}", name)
    return Tenant(name, registry_server.stubs(token))


@pytest.fixture
async def tenant(registry_server: RegistryServer) -> AsyncIterator[Tenant]:
    """A project of its own, and its admin (not a server admin), for each test."""
    found = await new_tenant(registry_server)
    yield found
    await found.api.close()


def put(tenant: Tenant, raw: dict[str, Any], project: str = "") -> Any:
    config = struct_pb2.Struct()
    config.update(raw)
    return tenant.api.backends.Put(
        registry_pb2.PutBackendRequest(project=project or tenant.project, config=config)
    )


async def refused(call: Any, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    details = caught.value.details() or ""
    assert details and "\n" not in details
    return details


async def stored(registry_server: RegistryServer, project: str) -> dict[str, dict[str, Any]]:
    async with registry_server.registry.ctx.read() as session:
        rows = (
            await session.execute(select(BackendConfigRow).where(BackendConfigRow.project_id == project))
        ).scalars()
        cipher = registry_server.registry.ctx.cipher
        return {row.type: json.loads(cipher.decrypt(row.config_encrypted)) for row in rows}


async def test_every_attack_is_refused_at_put_and_nothing_is_stored(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    for raw, expected in ATTACKS:
        details = await refused(put(tenant, raw))
        assert details.startswith(f"{raw['type']} backend: ") and expected in details, details
    listed = await tenant.api.backends.List(registry_pb2.ListBackendsRequest(project=tenant.project))
    assert list(listed.backends) == []
    assert await stored(registry_server, tenant.project) == {}


async def test_the_servers_own_identity_is_refused_at_put(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    for raw in (
        {"type": "aws"},
        {"type": "gcp", "project_id": "p"},
        {**azure(), "creds": {"type": "default"}},
    ):
        details = await refused(put(tenant, raw))
        assert (
            "creds of type default (or none given) act with the Gatehouse server's own cloud identity"
            in details
        )
    assert await stored(registry_server, tenant.project) == {}


async def test_an_attack_leaves_the_stored_good_configuration_as_it_was(
    tenant: Tenant, registry_server: RegistryServer
) -> None:
    for kind, raw in GOOD.items():
        info = await put(tenant, raw)
        assert (info.project, info.type) == (tenant.project, kind)
    before = await stored(registry_server, tenant.project)
    assert before == GOOD
    kube_exec = kubernetes(kubeconfig({"exec": {"command": "sh", "apiVersion": "v1"}}))
    for raw in (kube_exec, aws(endpoint_url="http://169.254.169.254/"), gcp({"type": "external_account"})):
        await refused(put(tenant, raw))
    assert await stored(registry_server, tenant.project) == before


async def test_each_project_resolves_its_own_configuration_only(registry_server: RegistryServer) -> None:
    first, second = await new_tenant(registry_server), await new_tenant(registry_server)
    first_config = kubernetes(kubeconfig(), namespace="first")
    await put(first, first_config)
    # An admin of one project cannot put the other's backend.
    details = await refused(
        put(first, kubernetes(kubeconfig()), second.project), grpc.StatusCode.PERMISSION_DENIED
    )
    assert second.project in details
    system = registry_server.stubs(registry_server.system_token)

    async def resolve(project: str) -> dict[str, Any]:
        request = registry_pb2.ResolveBackendRequest(project=project, type="kubernetes")
        return json_format.MessageToDict((await system.backends.Resolve(request)).config)

    assert await resolve(first.project) == first_config
    await refused(resolve(second.project), grpc.StatusCode.NOT_FOUND)
    second_config = kubernetes(kubeconfig(), namespace="second")
    await put(second, second_config)
    assert (await resolve(first.project), await resolve(second.project)) == (first_config, second_config)
    # Resolve is the provisioner's: a project admin cannot read credentials back.
    request = registry_pb2.ResolveBackendRequest(project=first.project, type="kubernetes")
    await refused(first.api.backends.Resolve(request), grpc.StatusCode.PERMISSION_DENIED)
    for stubs in (first.api, second.api, system):
        await stubs.close()

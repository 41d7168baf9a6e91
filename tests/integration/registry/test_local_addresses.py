"""Local gateways get an address each, across projects, so no two Envoys share a port."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import AsyncIterator

import grpc
import pytest

from gatehouse.v1 import registry_pb2
from tests.integration.registry.conftest import RegistryServer, Tenant
from tests.integration.registry.test_registry_api import apply, expect_error, local_gateway

pytestmark = pytest.mark.real


@pytest.fixture
async def two_tenants(registry_server: RegistryServer) -> AsyncIterator[tuple[Tenant, Tenant]]:
    tenants = []
    for _ in range(2):
        name = f"p-{secrets.token_hex(4)}"
        token = await registry_server.add_user(f"u-{name}", name)
        tenants.append(Tenant(name, registry_server.stubs(token)))
    yield tenants[0], tenants[1]
    for tenant in tenants:
        await tenant.api.close()


async def test_every_local_gateway_gets_a_loopback_address_of_its_own(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    addresses = []
    for tenant in two_tenants:
        for name in ("gw-a", "gw-b"):
            applied = await apply(tenant, **local_gateway(name))
            addresses.append(applied.gateway.spec.address)
    assert len(set(addresses)) == 4
    assert all(ipaddress.ip_address(address).is_loopback for address in addresses)
    assert "127.0.0.1" not in addresses  # the control plane's

    # Applied again without an address, a gateway keeps the one it was given: nothing to change.
    first = two_tenants[0]
    request = registry_pb2.ApplyRequest(project=first.project)
    request.configuration.update(local_gateway("gw-a"))
    assert (await first.api.configurations.GetPlan(request)).action == "none"
    again = await apply(first, **local_gateway("gw-a"))
    assert again.gateway.spec.address == addresses[0]


async def test_a_configured_address_another_gateway_binds_is_refused_without_naming_it(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    owner, other = two_tenants
    taken = (await apply(owner, **local_gateway("holder"))).gateway.spec.address
    message = await expect_error(
        grpc.StatusCode.ALREADY_EXISTS, apply(other, **local_gateway("squatter", address=taken))
    )
    assert f"address {taken} is taken by another gateway on this machine" in message
    assert owner.project not in message and "holder" not in message

    # Every address (0.0.0.0) overlaps every gateway's.
    message = await expect_error(
        grpc.StatusCode.ALREADY_EXISTS, apply(other, **local_gateway("everywhere", address="0.0.0.0"))
    )
    assert "address 0.0.0.0 is taken" in message


async def test_a_gateway_address_is_validated_and_only_for_the_local_backend(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    tenant = two_tenants[0]
    message = await expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, apply(tenant, **local_gateway("bad", address="not-an-ip"))
    )
    assert "'not-an-ip' is not an IP address" in message and "\n" not in message
    cloud = {
        "type": "gateway",
        "name": "cloud",
        "backend": "aws",
        "region": "eu-west-1",
        "address": "10.0.0.5",
    }
    message = await expect_error(grpc.StatusCode.INVALID_ARGUMENT, apply(tenant, **cloud))
    assert "`address` is for the local backend" in message


async def test_changing_a_gateway_address_is_a_re_create(two_tenants: tuple[Tenant, Tenant]) -> None:
    tenant = two_tenants[0]
    await apply(tenant, **local_gateway("moving"))
    message = await expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, apply(tenant, **local_gateway("moving", address="127.9.9.9"))
    )
    assert "cannot be updated in place" in message

"""What the API accepts has a size at every layer, each refused with one clear line: the gRPC
request, the configuration the registry stores, a secret, and a replica's environment once its
secrets are resolved (when applied, and again when a replica starts)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from gatehouse import limits
from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from tests.integration.registry.conftest import RegistryServer

pytestmark = pytest.mark.real


@pytest.fixture
async def tenant(registry_server: RegistryServer) -> AsyncIterator[tuple[str, Stubs]]:
    name = f"p-{secrets.token_hex(4)}"
    token = await registry_server.add_user(f"u-{name}", name)
    stubs = registry_server.stubs(token)
    yield name, stubs
    await stubs.close()


def _apply(project: str, config: dict[str, Any]) -> registry_pb2.ApplyRequest:
    struct = struct_pb2.Struct()
    struct.update(config)
    return registry_pb2.ApplyRequest(project=project, configuration=struct)


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _service(**extra: Any) -> dict[str, Any]:
    return {"type": "service", "name": "big", "port": 8000, "gateway": False, **extra}


async def test_a_request_above_the_api_limit_is_refused_before_it_is_read(
    tenant: tuple[str, Stubs],
) -> None:
    project, api = tenant
    # The 5 MB configuration: 46,000 env entries.
    huge = _service(env={f"VAR_{index}": "x" * 100 for index in range(46_000)})
    refused = await _refused(api.configurations.GetPlan(_apply(project, huge)))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(limits.API_REQUEST_BYTES) in (refused.details() or "")


async def test_a_configuration_above_the_stored_limit_is_refused(tenant: tuple[str, Stubs]) -> None:
    project, api = tenant
    large = _service(commands=["echo " + "x" * 300_000])
    refused = await _refused(api.configurations.Apply(_apply(project, large)))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "the configuration is 293 KiB: at most 256 KiB"
    listed = await api.services.List(registry_pb2.ListServicesRequest(project=project))
    assert not listed.services


async def test_a_secret_has_a_size_limit(tenant: tuple[str, Stubs]) -> None:
    project, api = tenant
    value = "x" * (limits.SECRET_VALUE_BYTES + 1)
    refused = await _refused(
        api.secrets.Add(registry_pb2.AddSecretRequest(project=project, name="BIG", value=value))
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details() == "the secret BIG is 64 KiB: a secret is at most 64 KiB"


async def test_a_replicas_environment_is_held_to_its_limit_with_secrets_resolved(
    registry_server: RegistryServer, tenant: tuple[str, Stubs]
) -> None:
    project, api = tenant
    for name in ("A", "B", "C"):
        await api.secrets.Add(registry_pb2.AddSecretRequest(project=project, name=name, value="x" * 40_000))
    env = {"A": "${{ secrets.A }}", "B": "${{ secrets.B }}", "C": "${{ secrets.C }}"}
    applied = await api.configurations.Apply(_apply(project, _service(env=env)))
    # Four make it too large: refused when applied, before anything is stored.
    more = _service(name="bigger", env={**env, "D": "${{ secrets.A }}"})
    refused = await _refused(api.configurations.Apply(_apply(project, more)))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.details() == (
        "`env` is 156 KiB with its secrets resolved: a replica's environment is at most 128 KiB "
        "(put large values in a file the commands read)"
    )
    # A secret that grows after the apply: the runner is refused the environment, with the reason.
    await api.secrets.Add(registry_pb2.AddSecretRequest(project=project, name="C", value="x" * 60_000))
    system = registry_server.stubs(registry_server.system_token)
    try:
        refused = await _refused(
            system.secrets.ResolveRun(registry_pb2.ResolveRunRequest(service_id=applied.service.id))
        )
    finally:
        await system.close()
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "with its secrets resolved: a replica's environment is at most 128 KiB" in str(refused.details())

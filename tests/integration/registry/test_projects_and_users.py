"""Projects, members, roles and tokens through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from gatehouse.v1 import registry_pb2
from tests.integration.registry.conftest import RegistryServer

pytestmark = pytest.mark.real


async def _code(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _apply(project: str, **config: Any) -> registry_pb2.ApplyRequest:
    struct = struct_pb2.Struct()
    struct.update(config)
    return registry_pb2.ApplyRequest(project=project, configuration=struct)


async def test_users_projects_roles_and_revocation(registry_server: RegistryServer) -> None:
    suffix = secrets.token_hex(3)
    admin = registry_server.stubs()
    created = await admin.users.Create(registry_pb2.CreateUserRequest(name=f"bob-{suffix}"))
    bob = registry_server.stubs(created.token)
    who = await bob.identity.WhoAmI(registry_pb2.WhoAmIRequest())
    assert who.user == f"bob-{suffix}" and list(who.projects) == [] and not who.admin

    # Not a member of main yet; not a server admin.
    assert await _code(bob.gateways.List(registry_pb2.ListGatewaysRequest(project="main"))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert await _code(bob.users.Create(registry_pb2.CreateUserRequest(name=f"eve-{suffix}"))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )

    # Any user can create a project and is its admin.
    own = await bob.projects.Create(registry_pb2.CreateProjectRequest(name=f"bobs-{suffix}"))
    assert [(m.user, m.role) for m in own.members] == [(f"bob-{suffix}", "admin")]
    listed = await bob.projects.List(registry_pb2.ListProjectsRequest())
    assert [p.name for p in listed.projects] == [f"bobs-{suffix}"]
    assert await _code(bob.projects.Create(registry_pb2.CreateProjectRequest(name=f"bobs-{suffix}"))) == (
        grpc.StatusCode.ALREADY_EXISTS
    )

    # A member of another project may run services but not manage its gateways or secrets.
    team = f"team-{suffix}"
    await admin.projects.Create(registry_pb2.CreateProjectRequest(name=team))
    await admin.projects.SetMember(
        registry_pb2.SetMemberRequest(project=team, user=f"bob-{suffix}", role="member")
    )
    gateway = {"type": "gateway", "name": "gw-team", "backend": "local", "region": "local"}
    assert await _code(bob.configurations.Apply(_apply(team, **gateway))) == grpc.StatusCode.PERMISSION_DENIED
    await admin.configurations.Apply(_apply(team, **gateway))
    service = {"type": "service", "name": "bobs-svc", "gateway": "gw-team", "port": "6001:8000"}
    assert await _code(bob.configurations.Apply(_apply(team, **service))) == grpc.StatusCode.OK
    add_secret = registry_pb2.AddSecretRequest(project=team, name="K", value="v")
    assert await _code(bob.secrets.Add(add_secret)) == grpc.StatusCode.PERMISSION_DENIED

    # The last admin stays; a project with resources is not deleted.
    last_admin = registry_pb2.RemoveMemberRequest(project=f"bobs-{suffix}", user=f"bob-{suffix}")
    assert await _code(bob.projects.RemoveMember(last_admin)) == grpc.StatusCode.FAILED_PRECONDITION
    assert await _code(admin.projects.Delete(registry_pb2.DeleteProjectRequest(name=team))) == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    await bob.projects.Delete(registry_pb2.DeleteProjectRequest(name=f"bobs-{suffix}"))

    # Revoked tokens stop working at once.
    revoked = await admin.users.RevokeTokens(registry_pb2.RevokeTokensRequest(user=f"bob-{suffix}"))
    assert revoked.revoked == 1
    assert await _code(bob.identity.WhoAmI(registry_pb2.WhoAmIRequest())) == grpc.StatusCode.UNAUTHENTICATED
    await bob.close()
    await admin.close()


@pytest.mark.parametrize("name", ["A", "1abc", "x", "has_underscore"])
async def test_bad_project_names(registry_server: RegistryServer, name: str) -> None:
    admin = registry_server.stubs()
    assert await _code(admin.projects.Create(registry_pb2.CreateProjectRequest(name=name))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    await admin.close()

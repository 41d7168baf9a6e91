"""Who may register replicas, at which addresses, and what becomes of them: through the gRPC API,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from services.registry.sweeper import sweep
from tests.integration.registry.conftest import RegistryServer, Tenant
from tests.integration.registry.test_registry_api import apply, expect_error, local_gateway

pytestmark = pytest.mark.real

RUNNING = resources_pb2.SERVICE_STATE_RUNNING


@dataclass
class Project:
    name: str
    admin: Stubs
    member: Stubs

    @property
    def as_admin(self) -> Tenant:
        return Tenant(self.name, self.admin)


@pytest.fixture
async def two(registry_server: RegistryServer) -> AsyncIterator[tuple[Project, Project]]:
    """Two projects, each with its admin and a plain member, each with a gateway and two services
    without commands (`web` on port 7101, `api` on 7102)."""
    server_admin = registry_server.stubs()
    made = []
    for _ in range(2):
        name = f"r-{secrets.token_hex(4)}"
        admin_token = await registry_server.add_user(f"a-{name}", name)
        member = await server_admin.users.Create(registry_pb2.CreateUserRequest(name=f"m-{name}"))
        await server_admin.projects.SetMember(
            registry_pb2.SetMemberRequest(project=name, user=f"m-{name}", role="member")
        )
        project = Project(name, registry_server.stubs(admin_token), registry_server.stubs(member.token))
        await apply(project.as_admin, **local_gateway("gw"))
        for service, port in (("web", 7101), ("api", 7102)):
            await apply(project.as_admin, type="service", name=service, gateway="gw", port=f"{port}:8000")
        made.append(project)
    await server_admin.close()
    yield made[0], made[1]
    for project in made:
        await project.admin.close()
        await project.member.close()


@pytest.fixture
async def system(registry_server: RegistryServer) -> AsyncIterator[Stubs]:
    stubs = registry_server.stubs(registry_server.system_token)
    yield stubs
    await stubs.close()


def register(
    project: Project | str, service: str, replica_id: str, address: str, runner: str = "ext"
) -> registry_pb2.RegisterReplicaRequest:
    name = project if isinstance(project, str) else project.name
    return registry_pb2.RegisterReplicaRequest(
        project=name, service=service, id=replica_id, address=address, ready=True, runner=runner
    )


async def listed(stubs: Stubs, project: str, service: str) -> dict[str, bool]:
    request = registry_pb2.ListReplicasRequest(project=project, service=service)
    return {replica.id: replica.ready for replica in (await stubs.replicas.List(request)).replicas}


async def refused(code: grpc.StatusCode, call: object) -> str:
    details = await expect_error(code, call)
    assert "\n" not in details and details
    return details


def machine_address() -> str:
    """An address of this machine's own interfaces (the one its packets leave from; none are sent)."""
    for family, target in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))
            host = probe.getsockname()[0]
            return f"[{host}]" if ":" in host else host
    raise AssertionError("this machine has no address besides loopback")


REFUSED = [
    ("127.0.0.1:9901", "loopback"),
    ("169.254.169.254:80", "metadata"),
    ("[::1]:80", "loopback"),
    ("localhost:80", "localhost resolves to"),
    ("[::ffff:127.0.0.1]:80", "loopback"),
    ("[fd00:ec2::254]:80", "metadata"),
    ("100.100.100.200:80", "metadata"),
    ("metadata.google.internal:80", "metadata"),
    ("[fe80::1]:80", "link-local"),
    ("0.0.0.0:80", "unspecified"),
    ("224.0.0.1:80", "multicast"),
    ("10.213.0.7:8000", "replica network 10.213.0.0/16"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
async def test_a_member_may_not_register_and_an_admin_not_at_a_refused_address(
    two: tuple[Project, Project], address: str, reason: str
) -> None:
    alpha, _ = two
    for index, service in enumerate(("web", "api")):
        request = register(alpha, service, f"{alpha.name}-{service}-{index}", address)
        denied = await refused(grpc.StatusCode.PERMISSION_DENIED, alpha.member.replicas.Register(request))
        assert "admin role" in denied
        details = await refused(grpc.StatusCode.INVALID_ARGUMENT, alpha.admin.replicas.Register(request))
        assert details.startswith(f"replica address {address} is refused: ") and reason in details
    assert await listed(alpha.admin, alpha.name, "web") == {}


async def test_addresses_of_the_gateway_host_are_refused(two: tuple[Project, Project], system: Stubs) -> None:
    alpha, beta = two
    mine = machine_address()
    for project in (alpha, beta):
        request = register(project, "web", f"{project.name}-own", f"{mine}:8000")
        details = await refused(grpc.StatusCode.INVALID_ARGUMENT, project.admin.replicas.Register(request))
        assert "the Gatehouse server's host" in details
    cloud = (await apply(beta.as_admin, **local_gateway("gw-cloud"))).gateway
    status = resources_pb2.GatewayStatus(
        state=resources_pb2.GATEWAY_STATE_RUNNING,
        hostname="203.0.113.7",
        addresses=["203.0.113.7", "gw.test"],
    )
    await system.gateways.UpdateStatus(registry_pb2.UpdateGatewayStatusRequest(id=cloud.id, status=status))
    await apply(beta.as_admin, type="service", name="edge", gateway="gw-cloud", port="7103:8000")
    request = register(beta, "edge", f"{beta.name}-edge", "203.0.113.7:8000")
    details = await refused(grpc.StatusCode.INVALID_ARGUMENT, beta.admin.replicas.Register(request))
    assert 'gateway "gw-cloud"\'s host' in details


async def test_a_project_admin_registers_private_addresses_within_replica_networks(
    two: tuple[Project, Project],
) -> None:
    alpha, beta = two
    for project in (alpha, beta):
        for index, service in enumerate(("web", "api")):
            replica = await project.admin.replicas.Register(
                register(project, service, f"{project.name}-{service}", f"10.1.2.{3 + index}:8000")
            )
            assert replica.ready
    await apply(alpha.as_admin, **local_gateway("gw-narrow", replica_networks=["10.1.0.0/16"]))
    await apply(alpha.as_admin, type="service", name="narrow", gateway="gw-narrow", port="7104:8000")
    await alpha.admin.replicas.Register(register(alpha, "narrow", f"{alpha.name}-in", "10.1.2.3:8000"))
    outside = register(alpha, "narrow", f"{alpha.name}-out", "10.2.0.1:8000")
    details = await refused(grpc.StatusCode.INVALID_ARGUMENT, alpha.admin.replicas.Register(outside))
    assert "outside the replica_networks" in details and "10.1.0.0/16" in details
    # Narrowed further, the next heartbeat of a replica now outside refuses it, and it leaves.
    await apply(alpha.as_admin, **local_gateway("gw-narrow", replica_networks=["10.9.0.0/16"]))
    beat = registry_pb2.HeartbeatRequest(id=f"{alpha.name}-in", ready=True)
    details = await refused(grpc.StatusCode.INVALID_ARGUMENT, alpha.admin.replicas.Heartbeat(beat))
    assert "10.9.0.0/16" in details
    assert await listed(alpha.admin, alpha.name, "narrow") == {}
    assert set(await listed(beta.admin, beta.name, "web")) == {f"{beta.name}-web"}


async def test_services_with_commands_take_only_the_local_runners_replicas(
    two: tuple[Project, Project], system: Stubs
) -> None:
    for project in two:
        command = ["python -m http.server 8000"]
        await apply(
            project.as_admin, type="service", name="run", gateway="gw", port="7105:8000", commands=command
        )
        mine = register(project, "run", f"{project.name}-run-0", "10.1.2.3:8000")
        details = await refused(grpc.StatusCode.FAILED_PRECONDITION, project.admin.replicas.Register(mine))
        assert "`commands`" in details
        agent = register(project, "run", f"{project.name}-run-1", "127.0.0.1:40001", runner="agent")
        await refused(grpc.StatusCode.FAILED_PRECONDITION, system.replicas.Register(agent))
        local = register(project, "run", f"{project.name}-run-2", "127.0.0.1:40002", runner="local")
        await system.replicas.Register(local)
        assert await listed(project.admin, project.name, "run") == {f"{project.name}-run-2": True}


async def test_users_cannot_claim_gatehouses_runners_or_their_replicas(
    two: tuple[Project, Project], system: Stubs
) -> None:
    alpha, _ = two
    for runner in ("local", "agent"):
        request = register(alpha, "web", f"{alpha.name}-{runner}", "10.1.2.3:8000", runner=runner)
        details = await refused(grpc.StatusCode.PERMISSION_DENIED, alpha.admin.replicas.Register(request))
        assert "Gatehouse's own" in details
    for index in range(2):
        replica_id = f"{alpha.name}-agent-{index}"
        await system.replicas.Register(register(alpha, "web", replica_id, f"127.0.0.1:4100{index}", "agent"))
        taken = register(alpha, "web", replica_id, "10.1.2.3:8000")
        await refused(grpc.StatusCode.PERMISSION_DENIED, alpha.admin.replicas.Register(taken))
        beat = registry_pb2.HeartbeatRequest(id=replica_id, ready=False)
        await refused(grpc.StatusCode.PERMISSION_DENIED, alpha.admin.replicas.Heartbeat(beat))
        gone = registry_pb2.UnregisterReplicaRequest(id=replica_id)
        await refused(grpc.StatusCode.PERMISSION_DENIED, alpha.admin.replicas.Unregister(gone))
    assert await listed(alpha.admin, alpha.name, "web") == {
        f"{alpha.name}-agent-0": True,
        f"{alpha.name}-agent-1": True,
    }


async def test_a_stale_registration_expires_and_the_local_runners_replicas_stay(
    two: tuple[Project, Project], system: Stubs, registry_server: RegistryServer
) -> None:
    alpha, beta = two
    await apply(alpha.as_admin, type="service", name="run", gateway="gw", port="7105:8000", commands=["true"])
    await system.replicas.Register(register(alpha, "run", f"{alpha.name}-run-0", "127.0.0.1:40003", "local"))
    for project in (alpha, beta):
        for replica in ("live", "gone"):
            await project.admin.replicas.Register(
                register(project, "web", f"{project.name}-{replica}", "10.0.0.1:8000")
            )
    await asyncio.sleep(0.3)
    for project in (alpha, beta):
        await project.admin.replicas.Heartbeat(
            registry_pb2.HeartbeatRequest(id=f"{project.name}-live", ready=True)
        )
    assert await sweep(registry_server.registry.ctx, ttl_seconds=0.2) >= 2
    for project in (alpha, beta):
        assert await listed(project.admin, project.name, "web") == {f"{project.name}-live": True}
    assert await listed(alpha.admin, alpha.name, "run") == {f"{alpha.name}-run-0": True}


async def test_a_service_whose_replicas_others_register_runs_once_one_is_ready(
    two: tuple[Project, Project], system: Stubs
) -> None:
    alpha, beta = two

    async def state(project: Project, service: str) -> int:
        got = await project.admin.services.Get(registry_pb2.GetRequest(project=project.name, name=service))
        return got.status.state

    assert await state(alpha, "web") == resources_pb2.SERVICE_STATE_SUBMITTED
    for index in range(2):
        replica = register(alpha, "web", f"{alpha.name}-agent-{index}", f"127.0.0.1:4200{index}", "agent")
        await system.replicas.Register(replica)
    await beta.admin.replicas.Register(register(beta, "api", f"{beta.name}-api-0", "10.0.0.2:8000"))
    assert await state(alpha, "web") == RUNNING and await state(beta, "api") == RUNNING
    assert await state(alpha, "api") == resources_pb2.SERVICE_STATE_SUBMITTED
    for index in range(2):
        await system.replicas.Unregister(
            registry_pb2.UnregisterReplicaRequest(id=f"{alpha.name}-agent-{index}")
        )
    assert await state(alpha, "web") == resources_pb2.SERVICE_STATE_PROVISIONING

"""What replicas say they run, and who may promote or abort a canary: through the gRPC API, with two
projects, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest

from gatehouse import rollouts
from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from tests.integration.registry.test_registry_api import apply
from tests.integration.registry.test_replica_admission import RUNNING, Project, refused, register, system, two

pytestmark = pytest.mark.real
__all__ = ["system", "two"]  # fixtures


async def _versions(stubs: Stubs, project: str, service: str) -> dict[str, str]:
    request = registry_pb2.ListReplicasRequest(project=project, service=service)
    return {replica.id: replica.version for replica in (await stubs.replicas.List(request)).replicas}


async def test_a_replica_registers_the_version_it_runs(two: tuple[Project, Project]) -> None:
    alpha, beta = two
    for project, version in ((alpha, "v1"), (beta, "2026.12-abc123")):
        request = register(project, "web", f"{project.name}-web-0", "10.0.0.5:8000")
        request.version = version
        await project.admin.replicas.Register(request)
    assert await _versions(alpha.admin, alpha.name, "web") == {f"{alpha.name}-web-0": "v1"}
    assert await _versions(beta.member, beta.name, "web") == {f"{beta.name}-web-0": "2026.12-abc123"}
    for version, reason in (("v" * 65, "the version is 65 characters: use at most 64"), ("v2\n", "control")):
        request = register(alpha, "api", f"{alpha.name}-api-0", "10.0.0.6:8000")
        request.version = version
        assert reason in await refused(
            grpc.StatusCode.INVALID_ARGUMENT, alpha.admin.replicas.Register(request)
        )
    assert await _versions(alpha.admin, alpha.name, "api") == {}


async def _canary(system: Stubs, project: Project, service: str) -> resources_pb2.Service:
    """The runner's report of a canary serving (as the local runner writes it)."""
    got = await project.admin.services.Get(registry_pb2.GetRequest(project=project.name, name=service))
    rollout = resources_pb2.Rollout(
        generation=got.generation, state=rollouts.CANARY, version="abc", canary_weight=10
    )
    status = resources_pb2.ServiceStatus(
        state=resources_pb2.SERVICE_STATE_RUNNING, observed_generation=got.generation, rollout=rollout
    )
    return await system.services.UpdateStatus(
        registry_pb2.UpdateServiceStatusRequest(id=got.id, status=status)
    )


def _decision(project: Project | str, service: str) -> registry_pb2.RolloutDecisionRequest:
    return registry_pb2.RolloutDecisionRequest(
        project=project if isinstance(project, str) else project.name, name=service
    )


async def test_only_the_projects_members_decide_its_canary_and_only_while_one_serves(
    two: tuple[Project, Project], system: Stubs
) -> None:
    alpha, beta = two
    nothing = await refused(
        grpc.StatusCode.FAILED_PRECONDITION, alpha.member.services.Promote(_decision(alpha, "web"))
    )
    assert (
        nothing == 'service "web" has no canary to promote (it has had no rollout): '
        "a change to a service with `canary` starts one"
    )
    await _canary(system, alpha, "web")
    await _canary(system, beta, "web")
    # Another project's admin reaches neither alpha's service by alpha's name nor through its own.
    await refused(grpc.StatusCode.PERMISSION_DENIED, beta.admin.services.Promote(_decision(alpha, "web")))
    promoted = await alpha.member.services.Promote(_decision(alpha, "web"))
    assert promoted.status.rollout.state == rollouts.PROMOTING
    untouched = await beta.admin.services.Get(registry_pb2.GetRequest(project=beta.name, name="web"))
    assert untouched.status.rollout.state == rollouts.CANARY
    late = await refused(
        grpc.StatusCode.FAILED_PRECONDITION, alpha.member.services.Abort(_decision(alpha, "web"))
    )
    assert "its last rollout is promoting" in late
    aborted = await beta.member.services.Abort(_decision(beta, "web"))
    assert aborted.status.rollout.state == rollouts.ABORTING


async def test_a_replica_others_run_counts_for_a_probed_service_once_its_probes_pass(
    two: tuple[Project, Project], system: Stubs
) -> None:
    alpha, beta = two
    await apply(
        alpha.as_admin,
        type="service",
        name="web",
        gateway="gw",
        port="7101:8000",
        probes=[{"type": "http", "url": "/health"}],
    )
    for project in (alpha, beta):
        await project.admin.replicas.Register(
            register(project, "web", f"{project.name}-web-0", "10.0.0.5:8000")
        )

    async def state(project: Project) -> tuple[int, int]:
        got = await project.admin.services.Get(registry_pb2.GetRequest(project=project.name, name="web"))
        return got.status.state, got.status.ready_replicas

    # Ready, says its runner: alpha's probes have not passed against it yet; beta's has no probes.
    assert await state(alpha) == (resources_pb2.SERVICE_STATE_SUBMITTED, 0)
    assert await state(beta) == (RUNNING, 1)
    verdict = registry_pb2.SetProbedRequest(id=f"{alpha.name}-web-0", passing=True)
    await refused(grpc.StatusCode.PERMISSION_DENIED, alpha.admin.replicas.SetProbed(verdict))
    assert (await system.replicas.SetProbed(verdict)).probed
    assert await state(alpha) == (RUNNING, 1)
    # Registered again at another address, it is probed afresh.
    await alpha.admin.replicas.Register(register(alpha, "web", f"{alpha.name}-web-0", "10.0.0.6:8000"))
    assert await state(alpha) == (resources_pb2.SERVICE_STATE_PROVISIONING, 0)

"""Authenticated traffic needs no control plane: two projects, each with a gateway whose real Envoy
fetches its configuration from its own gateway_xds process, and a service with auth behind each
(echo replicas, each with a body marker). With every gateway_xds process stopped (by pid), valid
credentials keep getting their own replica's answer and credentials revoked before the outage keep
getting 401, with 0 failed requests, and failed attempts stay limited per client address; while the
control plane is up, a revocation closes the door within a second; the credential never reaches a
replica. A revocation made during the outage waits
for the control plane (Envoy keeps the last configuration it was sent), then applies."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.v1 import registry_pb2
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.registry_driver import RegistryDriver
from gateway_xds.testing.upstream import Upstream
from tests.support.real import require_real
from tests.support.registry import LiveRegistry, live_registry

pytestmark = pytest.mark.real

# How long every gateway_xds stays down while requests keep coming (GATEHOUSE_AUTH_OUTAGE_SECONDS).
OUTAGE_SECONDS = float(os.environ.get("GATEHOUSE_AUTH_OUTAGE_SECONDS", "30"))
# With the control plane up, a revoked credential is refused within this (the requirement).
REVOCATION_SECONDS = 1.0
DEADLINE_SECONDS = 20.0
PROJECTS = ("main", "annex")
# Under /api, each client address may fail auth 3 times (burst 2), then one a minute.
LIMITS = [{"prefix": "/api", "rps": 1 / 60, "burst": 2}]


@dataclass
class ControlPlane:
    """gateway_xds processes on their own ports, stopped by pid."""

    registry: str
    token: str
    workdir: Path
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, port: int) -> None:
        env = {**os.environ, "GATEHOUSE_SYSTEM_TOKEN": self.token, "GATEHOUSE_HOME": str(self.workdir)}
        command = [sys.executable, "-m", "gateway_xds", "--registry", self.registry, "--port", str(port)]
        with (self.workdir / f"xds-{port}.log").open("ab") as log:
            self.processes[port] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def kill(self) -> None:
        for process in self.processes.values():
            os.kill(process.pid, signal.SIGKILL)
        for process in self.processes.values():
            process.wait(timeout=10)
        self.processes.clear()

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


@dataclass(frozen=True, eq=False)
class Service:
    name: str
    project: str
    port: int
    replica: Upstream
    envoy: EnvoyProcess


@dataclass
class World:
    registry: LiveRegistry
    control_plane: ControlPlane
    services: dict[str, Service]
    xds_ports: dict[str, int]
    # name -> bearer value
    credentials: dict[str, str] = field(default_factory=dict)

    def driver(self, project: str) -> RegistryDriver:
        return replace(self.registry.driver, project=project)


def request(service: Service, token: str | None, path: str = "/", **headers: str) -> tuple[int, bytes]:
    """Status and body; 0 and the error when nothing answered (a failed request, too)."""
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as error:
        return 0, str(error).encode()
    finally:
        connection.close()


def until(service: Service, token: str | None, status: int, within: float = DEADLINE_SECONDS) -> float:
    """Seconds until `token` gets `status` from `service` (polled); fails past `within`."""
    started = time.monotonic()
    answer = request(service, token)
    while answer[0] != status:
        elapsed = time.monotonic() - started
        assert elapsed < within, f"{service.name}: {answer} instead of {status} after {elapsed:.2f} s"
        time.sleep(0.01)
        answer = request(service, token)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def replicas() -> Iterator[dict[str, Upstream]]:
    with Upstream(b"alpha replica") as alpha, Upstream(b"beta replica") as beta:
        yield {"alpha": alpha, "beta": beta}


@pytest.fixture(scope="module")
async def world(
    tmp_path_factory: pytest.TempPathFactory, replicas: dict[str, Upstream]
) -> AsyncIterator[World]:
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    async with live_registry(tmp_path_factory.mktemp("outage-registry")) as registry:
        await registry.admin.projects.Create(registry_pb2.CreateProjectRequest(name="annex"))
        control_plane = ControlPlane(
            registry.address, registry.system_token, tmp_path_factory.mktemp("outage-xds")
        )
        envoys: list[EnvoyProcess] = []
        world = World(registry, control_plane, {}, {})
        try:
            for project, (name, replica) in zip(PROJECTS, replicas.items(), strict=True):
                driver = world.driver(project)
                xds_port, port = free_port(), free_port()
                control_plane.start(xds_port)
                world.xds_ports[project] = xds_port
                gateway = await driver.running_gateway(f"gw-{project}", "127.0.0.1", free_port())
                params = BootstrapParams(gateway.id, 0, "127.0.0.1", xds_port, admin_port=free_port())
                envoy = EnvoyProcess(
                    binary, tmp_path_factory.mktemp(f"envoy-{project}"), render_bootstrap(params)
                )
                envoy.start()
                envoys.append(envoy)
                await asyncio.to_thread(envoy.wait_ready)
                await driver.service(name, f"gw-{project}", f"{port}:8000", auth=True, rate_limits=LIMITS)
                await driver.replica(name, f"{name}-0", f"127.0.0.1:{replica.port}")
                service = world.services[name] = Service(name, project, port, replica, envoy)
                await asyncio.to_thread(until, service, registry.admin_token, 200)
            yield world
        finally:
            control_plane.stop()
            for envoy in envoys:
                envoy.stop()


async def user(world: World, name: str, project: str) -> str:
    created = await world.registry.admin.users.Create(registry_pb2.CreateUserRequest(name=name))
    await world.registry.admin.projects.SetMember(registry_pb2.SetMemberRequest(project=project, user=name))
    return str(created.token)


async def api_key(world: World, service: Service) -> tuple[str, str]:
    request = registry_pb2.CreateServiceKeyRequest(project=service.project, service=service.name)
    key = await world.registry.admin.service_keys.Create(request)
    return key.name, key.key


async def test_valid_credentials_get_through_and_revoked_ones_stay_out_with_every_gateway_xds_down(
    world: World,
) -> None:
    alpha, beta = world.services["alpha"], world.services["beta"]
    ann, bob = await user(world, "ann", "main"), await user(world, "bob", "annex")
    gone_user = await user(world, "carl", "main")
    (_, alpha_key), (_, beta_key) = await api_key(world, alpha), await api_key(world, beta)
    gone_key_name, gone_key = await api_key(world, beta)
    # Who gets which answer (200: the service's own replica's body), outage or not.
    expected = {
        ("ann", alpha): 200,
        ("ann", beta): 401,
        ("bob", beta): 200,
        ("bob", alpha): 401,
        ("alpha-key", alpha): 200,
        ("alpha-key", beta): 401,
        ("beta-key", beta): 200,
        ("beta-key", alpha): 401,
        ("carl (revoked)", alpha): 401,
        ("beta key (revoked)", beta): 401,
        ("no credential", alpha): 401,
        ("no credential", beta): 401,
        ("not a credential", beta): 401,
    }
    tokens = {
        "ann": ann,
        "bob": bob,
        "alpha-key": alpha_key,
        "beta-key": beta_key,
        "carl (revoked)": gone_user,
        "beta key (revoked)": gone_key,
        "no credential": None,
        "not a credential": "gh_" + "A" * 43,
    }
    for token, service in ((ann, alpha), (bob, beta), (gone_user, alpha), (gone_key, beta), (beta_key, beta)):
        await asyncio.to_thread(until, service, token, 200)

    # With the control plane up, a revocation closes the door within a second: a user's tokens, a key.
    await world.registry.admin.users.RevokeTokens(registry_pb2.RevokeTokensRequest(user="carl"))
    await asyncio.to_thread(until, alpha, gone_user, 401, REVOCATION_SECONDS)
    deleted = registry_pb2.DeleteServiceKeyRequest(project="annex", service="beta", name=gone_key_name)
    await world.registry.admin.service_keys.Delete(deleted)
    await asyncio.to_thread(until, beta, gone_key, 401, REVOCATION_SECONDS)

    def round_of_requests(answers: Counter[str]) -> list[str]:
        wrong = []
        for (who, service), status in expected.items():
            got, body = request(service, tokens[who])
            answers[f"{got}"] += 1
            if got != status or (status == 200 and body != service.replica.body):
                wrong.append(f"{who} on {service.name}: {got} {body[:120]!r}, expected {status}")
        return wrong

    assert round_of_requests(Counter()) == []
    world.control_plane.kill()
    for service in (alpha, beta):
        await asyncio.to_thread(until_disconnected, service.envoy)

    def outage() -> tuple[Counter[str], list[str]]:
        answers: Counter[str] = Counter()
        wrong: list[str] = []
        ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < ends:
            wrong += round_of_requests(answers)
        return answers, wrong

    # A revocation now cannot reach the Envoys: ann keeps her access until the control plane is back.
    await world.registry.admin.users.RevokeTokens(registry_pb2.RevokeTokensRequest(user="ann"))
    del expected[("ann", alpha)], expected[("ann", beta)]
    answers, wrong = await asyncio.to_thread(outage)
    assert wrong == [], wrong[:10]
    assert answers["200"] > 0 and answers["401"] > 0 and sum(answers.values()) >= 100, answers
    assert request(alpha, ann)[0] == 200
    # Failed attempts are still limited per client address, by each Envoy.
    for service in (alpha, beta):
        flood = [request(service, "gh_guess", "/api/x")[0] for _ in range(5)]
        assert flood == [401] * 3 + [429] * 2, (service.name, flood)
        assert request(service, alpha_key if service is alpha else beta_key, "/api/x")[0] == 200
    for service in (alpha, beta):
        assert service.envoy.stats("control_plane.connected_state")["control_plane.connected_state"] == 0

    for xds_port in world.xds_ports.values():
        world.control_plane.start(xds_port)
    await asyncio.to_thread(until, alpha, ann, 401)
    assert round_of_requests(Counter()) == []


def until_disconnected(envoy: EnvoyProcess) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while envoy.stats("control_plane.connected_state").get("control_plane.connected_state") != 0:
        assert time.monotonic() < deadline, "Envoy still connected to a control plane"
        time.sleep(0.05)


async def test_the_credential_never_reaches_a_replica_and_the_principal_is_the_gateways(world: World) -> None:
    for name, project in (("alpha", "main"), ("beta", "annex")):
        service = world.services[name]
        token = await user(world, f"dana-{name}", project)
        _, key = await api_key(world, service)
        for bearer, principal in ((token, f"user:dana-{name}"), (key, "key:")):
            await asyncio.to_thread(until, service, bearer, 200)
            status, body = request(service, bearer, "/headers", **{"X-Gatehouse-Principal": "user:admin"})
            seen = json.loads(body)
            assert status == 200 and "authorization" not in seen, seen
            assert seen["x-gatehouse-principal"].startswith(principal), seen
        # A forged refusal mark only refuses the request that carries it.
        status, _ = request(service, token, **{"X-Gatehouse-Auth-Failure": "refused"})
        assert status == 401

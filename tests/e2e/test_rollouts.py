"""Probes and rolling updates through a real gateway Envoy, under a bounded request loop on loopback:
every answer's body names the version and replica that gave it, so a test sees which replicas took
traffic. A new version rolls without a failed request; one whose command fails, or whose probe never
passes, never receives a request while the old version serves throughout."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from gatehouse.v1 import resources_pb2
from services.common.probes import free_port
from services.provisioner.backends.local.network import NamespaceNetwork, namespaces_available
from services.provisioner.runner import LocalRunner
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.real import require_real
from tests.support.rollouts import APP, Load, rollout_of, service_file, until
from tests.support.server import ServerProcess, running_server

pytestmark = pytest.mark.real

READY_TIMEOUT = 12


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A new version has 12 s to get ready; a replica out of the endpoints drains for 1 s.
    # Replicas registered by others are registered once: they outlive the module without heartbeats.
    env = {
        "GATEHOUSE_REPLICA_READY_TIMEOUT": str(READY_TIMEOUT),
        "GATEHOUSE_REPLICA_DRAIN": "1",
        "GATEHOUSE_REPLICA_TTL": "600",
    }
    with running_server(tmp_path_factory.mktemp("gatehouse-home"), extra_env=env) as process:
        yield process


@pytest.fixture(scope="module")
def gateway(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("gw") / "gw.dstack.yml"
    path.write_text("type: gateway\nname: roll-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(path), "-y").code == 0
    return gateway_host(server, "roll-gw")


def _replicas(server: ServerProcess, name: str) -> list[dict[str, object]]:
    shown = server.cli("replica", "list", name, "--json")
    replicas: list[dict[str, object]] = json.loads(shown.stdout).get("replicas", [])
    return replicas


def test_a_replica_takes_traffic_only_while_its_probe_passes(
    server: ServerProcess, gateway: str, tmp_path: Path
) -> None:
    health = tmp_path / "health"
    health.mkdir()
    port = free_port()
    service = service_file(tmp_path, "probed", port, "v1", replicas=2, env={"HEALTH_DIR": str(health)})
    # Neither replica passes yet: `apply` waits, and nothing is in the endpoints.
    assert server.cli("apply", "-f", str(service), "-y", "-d").code == 0
    url = f"http://{gateway}:{port}/"
    time.sleep(3)  # three probe intervals: both replicas run and fail their probe
    assert [replica.get("ready", False) for replica in _replicas(server, "probed")] in (
        [],
        [False],
        [False] * 2,
    )
    assert fetch(url)[0] == 503
    (health / "0").touch()
    assert until(lambda: fetch(url) == (200, "v1 replica 0"))
    with Load(url) as load:
        time.sleep(1)
        assert set(load.bodies()) == {"v1 replica 0"}  # replica 1 answers on its port, but fails its probe
        (health / "1").touch()
        assert until(lambda: "v1 replica 1" in load.bodies(len(load.answers) - 20))
        (health / "0").unlink()  # replica 0 fails its probe: out of the endpoints, its requests finish
        assert until(lambda: set(load.bodies(len(load.answers) - 30)) == {"v1 replica 1"})
        (health / "0").touch()
        assert until(lambda: "v1 replica 0" in load.bodies(len(load.answers) - 20))
    assert load.failed() == [], Counter(load.failed())
    assert server.cli("delete", "-f", str(service), "-y").code == 0


@pytest.mark.parametrize(
    ("name", "bounds"),
    [
        ("rolling", ""),  # one new replica beyond the two at a time, none short
        ("surging", "rollout: {max_surge: 2}\n"),  # both new ones at once
        ("shrinking", "rollout: {max_surge: 0, max_unavailable: 1}\n"),  # an old one goes first
    ],
)
def test_a_good_new_version_rolls_without_a_failed_request(
    server: ServerProcess, gateway: str, tmp_path: Path, name: str, bounds: str
) -> None:
    port = free_port()
    url = f"http://{gateway}:{port}/"
    first = service_file(tmp_path, name, port, "v1", replicas=2, extra=bounds)
    assert server.cli("apply", "-f", str(first), "-y").code == 0
    assert until(lambda: set(_sample(url)) == {"v1 replica 0", "v1 replica 1"})
    with Load(url) as load:
        second = service_file(tmp_path, name, port, "v2", replicas=2, extra=bounds)
        applied = server.cli("apply", "-f", str(second), "-y")
        assert applied.code == 0, applied.stdout + applied.stderr
        assert "Rolling out:" in applied.stdout
        after = len(load.answers)
        time.sleep(1)
    assert load.failed() == [], Counter(load.failed())
    bodies = load.bodies()
    assert {body.split()[0] for body in bodies} == {"v1", "v2"}, bodies
    # Once `apply` returned, the old version served nothing.
    assert {body.split()[0] for body in load.bodies(after)} == {"v2"}, load.bodies(after)
    listed = _replicas(server, name)
    assert len(listed) == 2 and all(replica.get("ready") for replica in listed), listed
    assert len({replica.get("version") for replica in listed}) == 1
    rollout = json.loads(server.cli("service", "get", name, "--json").stdout)["status"]["rollout"]
    assert rollout["state"] == "complete", rollout
    assert server.cli("delete", "-f", str(tmp_path / f"{name}.dstack.yml"), "-y").code == 0


def _sample(url: str, count: int = 20) -> Counter[str]:
    return Counter(fetch(url)[1] for _ in range(count))


@pytest.mark.parametrize(
    ("case", "broken", "reason"),
    [
        ("command", {"command": "echo v2 cannot start >&2; exit 3"}, "exited with code 3"),
        (
            "probe",
            {"probe": "{type: http, url: /health, interval: 1s, expected_status: 299}"},
            "did not pass its probes",
        ),
    ],
)
def test_a_new_version_that_never_gets_ready_is_rolled_back_and_never_served(
    server: ServerProcess,
    gateway: str,
    tmp_path: Path,
    case: str,
    broken: dict[str, Any],
    reason: str,
) -> None:
    name = f"broken-{case}"
    port = free_port()
    url = f"http://{gateway}:{port}/"
    served = tmp_path / "served.log"
    env = {"SERVED_LOG": str(served)}
    assert server.cli("apply", "-f", str(service_file(tmp_path, name, port, "v1", env=env)), "-y").code == 0
    with Load(url) as load:
        applied = server.cli(
            "apply",
            "-f",
            str(service_file(tmp_path, name, port, "v2", env=env, **broken)),
            "-y",
        )
        after = len(load.answers)
        time.sleep(1)
    assert applied.code == 1, applied.stdout + applied.stderr
    error = applied.stderr.strip().splitlines()
    assert len(error) == 1 and "rolled back" in error[0] and reason in error[0], (error, server.log()[-3000:])
    assert load.failed() == [], Counter(load.failed())
    assert set(load.bodies()) == {"v1 replica 0"}, load.bodies()
    assert len(load.answers) > after  # it kept serving after `apply` gave up
    # The new version's replica never answered a request (its own count, on its side).
    assert {line.split()[0] for line in served.read_text().splitlines()} == {"v1"}
    table = server.cli("service", "list", "-v").stdout
    assert "ROLLOUT" in table.splitlines()[0], table
    assert any(name in line and "rolled back: replica 1" in line for line in table.splitlines()), table
    shown = json.loads(server.cli("service", "get", name, "--json").stdout)["status"]
    assert shown["state"] == "SERVICE_STATE_RUNNING" and shown["rollout"]["state"] == "failed", shown
    listed = _replicas(server, name)
    assert len(listed) == 1 and listed[0].get("ready"), listed
    assert server.cli("delete", "-f", str(tmp_path / f"{name}.dstack.yml"), "-y").code == 0


def test_a_canary_takes_its_share_then_promote_and_abort_drop_no_request(
    server: ServerProcess, gateway: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://{gateway}:{port}/"
    canary = "canary: {weight: 10, header: X-Canary}\n"

    def version(tag: str) -> Path:
        return service_file(tmp_path, "canaried", port, tag, replicas=2, extra=canary)

    assert server.cli("apply", "-f", str(version("v1")), "-y").code == 0
    refused = server.cli("service", "promote", "canaried")
    assert refused.code == 1 and refused.stderr.strip().count("\n") == 0, refused.stderr
    assert 'service "canaried" has no canary to promote' in refused.stderr

    applied = server.cli("apply", "-f", str(version("v2")), "-y")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert "Canary: 10% of requests and those with x-canary go to the new version" in applied.stdout
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fetch(url), range(2000)))
    assert [status for status, _ in answers].count(200) == 2000, Counter(answers)
    shares = Counter(body.split()[0] for _, body in answers)
    assert set(shares) == {"v1", "v2"} and 140 <= shares["v2"] <= 260, shares  # 10% ± 3%
    with_header = {fetch(url, headers={"X-Canary": "yes"})[1] for _ in range(50)}
    assert {body.split()[0] for body in with_header} == {"v2"}, with_header

    with Load(url) as load:
        promoted = server.cli("service", "promote", "canaried")
        assert promoted.code == 0, promoted.stderr
        assert until(lambda: rollout_of(server, "canaried").get("state") == "complete")
        after = len(load.answers)
        time.sleep(1)
    assert load.failed() == [], Counter(load.failed())
    assert {body.split()[0] for body in load.bodies(after)} == {"v2"}, load.bodies(after)

    applied = server.cli("apply", "-f", str(version("v3")), "-y")
    assert applied.code == 0, applied.stdout + applied.stderr
    assert until(lambda: "v3" in {body.split()[0] for body in _sample(url, 40)})
    with Load(url) as load:
        aborted = server.cli("service", "abort", "canaried")
        assert aborted.code == 0, aborted.stderr
        assert until(lambda: rollout_of(server, "canaried").get("state") == "failed")
        after = len(load.answers)
        time.sleep(1)
    assert load.failed() == [], Counter(load.failed())
    assert {body.split()[0] for body in load.bodies(after)} == {"v2"}, load.bodies(after)
    assert "aborted" in str(rollout_of(server, "canaried").get("message"))
    listed = _replicas(server, "canaried")
    assert len(listed) == 2 and all(replica.get("ready") for replica in listed), listed
    assert server.cli("delete", "-f", str(tmp_path / "canaried.dstack.yml"), "-y").code == 0


# Where the test runs the replicas "others" register: a network of its own, apart from the server's
# replica network, reachable by the gateway's Envoy as a replica on another host would be.
OTHERS_SUBNET = "10.219.0.0/16"


@pytest.fixture
def others(tmp_path: Path) -> Iterator[Callable[[int, dict[str, str]], str]]:
    """Starts the app as replica N in a network namespace of its own; returns its address."""
    if not namespaces_available():
        require_real("network namespaces need root and `ip` (iproute2)")
    runner = LocalRunner(tmp_path / "others", NamespaceNetwork(IPv4Network(OTHERS_SUBNET)), 10.0)
    app = tmp_path / "app.py"
    app.write_text(APP)

    def start(index: int, env: dict[str, str]) -> str:
        spec = resources_pb2.ServiceSpec(commands=[f"python {app}"], app_port=8000, env=env)
        service = resources_pb2.Service(id="others", name="others", spec=spec)
        replica = runner.replica("others", index)

        async def started() -> str:
            await runner.start(replica, service)
            await runner.wait_ready(replica, 8000)
            return await runner.address(replica, 8000)

        return asyncio.run(started())

    yield start
    asyncio.run(runner.stop_service("others"))


def test_replicas_others_register_take_traffic_only_while_their_probes_pass(
    server: ServerProcess, gateway: str, tmp_path: Path, others: Callable[[int, dict[str, str]], str]
) -> None:
    health = tmp_path / "health"
    health.mkdir()
    port = free_port()
    url = f"http://{gateway}:{port}/"
    service = tmp_path / "outside.dstack.yml"
    service.write_text(
        f'type: service\nname: outside\ngateway: roll-gw\nport: "{port}:8000"\nauth: false\n'
        "probes: [{type: http, url: /health, interval: 1s, timeout: 1s, unready_after: 1}]\n"
    )
    assert server.cli("apply", "-f", str(service), "-y", "-d").code == 0

    def register(index: int, version: str) -> None:
        address = others(index, {"VERSION": version, "HEALTH_DIR": str(health)})
        registered = server.cli(
            "replica", "register", "--service", "outside", "--id", f"outside-{index}",
            "--address", address, "--ready", "--version", version,
        )  # fmt: skip
        assert registered.code == 0, registered.stderr

    (health / "0").touch()
    register(0, "v1")
    assert until(lambda: fetch(url) == (200, "v1 replica 0"))
    with Load(url) as load:
        register(1, "v2")  # ready, says its runner; its probe fails
        time.sleep(3)
        probed = {replica["id"]: replica.get("probed", False) for replica in _replicas(server, "outside")}
        assert probed == {"outside-0": True, "outside-1": False}, probed
        assert set(load.bodies()) == {"v1 replica 0"}  # the new version got none yet
        (health / "1").touch()
        assert until(lambda: "v2 replica 1" in load.bodies(len(load.answers) - 20))
        (health / "0").unlink()  # the old version fails its probe: out, its requests finish
        assert until(lambda: set(load.bodies(len(load.answers) - 30)) == {"v2 replica 1"})
    assert load.failed() == [], Counter(load.failed())
    versions = {replica["id"]: replica.get("version") for replica in _replicas(server, "outside")}
    assert versions == {"outside-0": "v1", "outside-1": "v2"}
    assert server.cli("delete", "-f", str(service), "-y").code == 0

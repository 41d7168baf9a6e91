"""Local replicas in networks of their own (network namespaces), and on the shared network where
readiness asks who holds the listening socket."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from gatehouse.v1 import resources_pb2
from services.common.probes import free_port, http_get
from services.provisioner.backends.local.network import (
    HostNetwork,
    NamespaceNetwork,
    namespaces_available,
)
from services.provisioner.runner import LocalRunner, ReplicaFailed
from tests.support.real import require_real

pytestmark = pytest.mark.real

SUBNET = "10.213.0.0/16"
# Seed 004's own command, and a marker saying which replica answered.
SEED_COMMAND = "echo replica-$GATEHOUSE_SERVICE-$GATEHOUSE_REPLICA > marker.txt\npython -m http.server 8000"


def service(service_id: str, port: int, *commands: str) -> resources_pb2.Service:
    return resources_pb2.Service(
        id=service_id, name=service_id, spec=resources_pb2.ServiceSpec(commands=list(commands), app_port=port)
    )


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[LocalRunner]:
    if not namespaces_available():
        require_real("network namespaces need root and `ip` (iproute2)")
    yield LocalRunner(tmp_path / "replicas", NamespaceNetwork(IPv4Network(SUBNET)), 3.0)


@pytest.fixture
def listening_elsewhere() -> Iterator[int]:
    """A process that is not a replica, holding a port on every address of this machine."""
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        yield int(held.getsockname()[1])


def own_namespaces(root: Path) -> set[str]:
    """The namespaces this runner made (other test runs on the machine make theirs meanwhile)."""
    return {json.loads(state.read_text())["namespace"] for state in root.glob("**/network.json")}


async def test_every_replica_listens_on_the_service_port_in_its_own_network(
    isolated: LocalRunner, tmp_path: Path
) -> None:
    replicas = [isolated.replica("web", index) for index in range(3)]
    try:
        for replica in replicas:
            await isolated.start(replica, service("web", 8000, SEED_COMMAND))
        for replica in replicas:
            await isolated.wait_ready(replica, 8000)
        addresses = [await isolated.address(replica, 8000) for replica in replicas]
        assert len(set(addresses)) == 3 and all(address.endswith(":8000") for address in addresses)
        for index, address in enumerate(addresses):
            host, _, port = address.rpartition(":")
            status, body = await http_get(host, int(port), "/marker.txt")
            assert (status, body.strip()) == (200, f"replica-web-{index}")
        made = own_namespaces(tmp_path / "replicas")
        assert len(made) == 3 and made <= namespaces()
    finally:
        await isolated.stop_service("web")
    assert not made & namespaces()
    # A gone replica's address fails here at once; it never leaves by this machine's default route.
    gone = addresses[0].rpartition(":")[0]
    route = await asyncio.to_thread(
        subprocess.run, ["ip", "route", "get", gone], capture_output=True, text=True
    )
    assert route.returncode != 0 and "no route to host" in route.stderr.lower(), route


async def test_a_replica_that_never_listens_is_never_ready_beside_another_process_on_its_port(
    isolated: LocalRunner, listening_elsewhere: int
) -> None:
    replica = isolated.replica("silent", 0)
    try:
        await isolated.start(replica, service("silent", listening_elsewhere, "sleep 600"))
        with pytest.raises(ReplicaFailed, match=f"did not open port {listening_elsewhere}"):
            await isolated.wait_ready(replica, listening_elsewhere)
    finally:
        await isolated.stop_service("silent")


async def test_a_replica_on_loopback_only_is_told_why_the_gateway_cannot_reach_it(
    isolated: LocalRunner,
) -> None:
    replica = isolated.replica("loopback", 0)
    try:
        await isolated.start(
            replica, service("loopback", 8000, "python -m http.server 8000 --bind 127.0.0.1")
        )
        with pytest.raises(ReplicaFailed, match=r"listens on 127\.0\.0\.1 only"):
            await isolated.wait_ready(replica, 8000)
    finally:
        await isolated.stop_service("loopback")


async def test_on_the_shared_network_a_port_held_by_another_process_is_refused(
    tmp_path: Path, listening_elsewhere: int
) -> None:
    runner = LocalRunner(tmp_path / "replicas", HostNetwork(), 3.0)
    replica = runner.replica("taken", 0)
    with pytest.raises(ReplicaFailed, match=f"port {listening_elsewhere} is taken on this machine"):
        await runner.start(replica, service("taken", listening_elsewhere, "sleep 600"))
    assert not replica.process.running()


async def test_on_the_shared_network_only_the_replicas_own_socket_makes_it_ready(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path / "replicas", HostNetwork(), 3.0)
    port = free_port()
    replica = runner.replica("late", 0)
    try:
        await runner.start(replica, service("late", port, "sleep 600"))
        # Another process takes the port after the replica started: it answers, but is not the replica.
        with socket.socket() as other:
            other.bind(("127.0.0.1", port))
            other.listen()
            with pytest.raises(ReplicaFailed, match=f"did not open port {port}"):
                await runner.wait_ready(replica, port)
    finally:
        await runner.stop_service("late")


async def test_a_crashed_replica_says_how_it_ended(isolated: LocalRunner) -> None:
    replica = isolated.replica("crash", 0)
    try:
        await isolated.start(replica, service("crash", 8000, "echo 'cannot load model' >&2", "exit 3"))
        with pytest.raises(ReplicaFailed, match="replica 0 exited with code 3: cannot load model"):
            await isolated.wait_ready(replica, 8000)
    finally:
        await isolated.stop_service("crash")


async def test_replica_networks_are_kept_across_a_runner_restart(
    isolated: LocalRunner, tmp_path: Path
) -> None:
    replica = isolated.replica("kept", 0)
    try:
        await isolated.start(replica, service("kept", 8000, SEED_COMMAND))
        await isolated.wait_ready(replica, 8000)
        address = await isolated.address(replica, 8000)
        again = LocalRunner(tmp_path / "replicas", NamespaceNetwork(IPv4Network(SUBNET)))
        adopted = again.replica("kept", 0)
        assert adopted.process.running()
        assert await again.address(adopted, 8000) == address
        await asyncio.wait_for(again.wait_ready(adopted, 8000), 5)
    finally:
        await isolated.stop_service("kept")


def _connects(namespace_prefix: tuple[str, ...], address: str, port: int) -> bool:
    """Whether a process in the replica's network opens a TCP connection to address:port."""
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=2)"
    done = subprocess.run([*namespace_prefix, sys.executable, "-c", probe], capture_output=True)
    return done.returncode == 0


def _isolation_rules(action: str, *prefixes: tuple[str, ...]) -> str:
    """Adds or deletes the replicas' routing rules (`ip rule`); the rules there are after."""
    for prefix in prefixes:
        link = "gh" + prefix[-1].removeprefix("gh-")
        subprocess.run(["ip", "rule", action, "iif", link, "to", SUBNET, "prohibit"], check=True)
    return subprocess.run(["ip", "rule"], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def forwarding() -> Iterator[None]:
    """This machine forwards packets (as Docker hosts do) for the test's length."""
    setting = Path("/proc/sys/net/ipv4/ip_forward")
    before = setting.read_text()
    setting.write_text("1\n")
    yield
    setting.write_text(before)


async def test_a_replica_reaches_this_machine_but_never_another_replica(
    isolated: LocalRunner, listening_elsewhere: int, forwarding: None
) -> None:
    first, second = isolated.replica("near", 0), isolated.replica("far", 0)
    try:
        for replica, name in ((first, "near"), (second, "far")):
            await isolated.start(replica, service(name, 8000, SEED_COMMAND))
            await isolated.wait_ready(replica, 8000)
        near = await isolated.network.attach(first.process.directory)
        far = await isolated.network.attach(second.process.directory)
        host_end = str(ipaddress.ip_address(near.address) - 1)
        assert await asyncio.to_thread(_connects, near.command_prefix, host_end, listening_elsewhere)
        assert not await asyncio.to_thread(_connects, near.command_prefix, far.address, 8000)
        # Without the rules this machine would forward those packets: the check above can fail.
        await asyncio.to_thread(_isolation_rules, "delete", near.command_prefix, far.command_prefix)
        try:
            assert await asyncio.to_thread(_connects, near.command_prefix, far.address, 8000)
        finally:
            await asyncio.to_thread(_isolation_rules, "add", near.command_prefix, far.command_prefix)
    finally:
        await isolated.stop_service("near")
        await isolated.stop_service("far")
    rules = await asyncio.to_thread(_isolation_rules, "list")
    for prefix in (near.command_prefix, far.command_prefix):
        assert f"iif gh{prefix[-1].removeprefix('gh-')}" not in rules


async def test_a_replica_gets_none_of_the_servers_secrets(
    isolated: LocalRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_TOKEN", "server-token-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud-key-value")
    replica = isolated.replica("curious", 0)
    try:
        await isolated.start(
            replica, service("curious", 8000, "env > seen.txt", "python -m http.server 8000")
        )
        await isolated.wait_ready(replica, 8000)
        seen = (replica.workdir / "seen.txt").read_text()
    finally:
        await isolated.stop_service("curious")
    assert "GATEHOUSE_SERVICE=curious" in seen and "PORT=8000" in seen
    assert "server-token-value" not in seen and "cloud-key-value" not in seen


async def test_an_address_a_replica_left_is_not_given_to_the_next_one(isolated: LocalRunner) -> None:
    """Gateways may route to a replica's address for a moment after it stops: the next replica, of
    whatever service, gets another one."""
    first = isolated.replica("leaving", 0)
    try:
        await isolated.start(first, service("leaving", 8000, SEED_COMMAND))
        left = await isolated.address(first, 8000)
    finally:
        await isolated.stop_service("leaving")
    second = isolated.replica("arriving", 0)
    try:
        await isolated.start(second, service("arriving", 8000, SEED_COMMAND))
        assert await isolated.address(second, 8000) != left
    finally:
        await isolated.stop_service("arriving")

"""Two copies of every process on one PostgreSQL, each with its own empty home, and a real Envoy under
load: one copy of each is killed with SIGKILL (the registry clients write to, the gateway_xds the
Envoy streams from, the leading provisioner and certificates) while 50 applies are in flight. No
write is lost or made twice, no host is made twice, every service is live within 5 s of its write,
and the service already there answers every request."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import struct_pb2

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.testing.load import LoadLoop
from gateway_xds.testing.upstream import Upstream
from gateway_xds.translate.local_replies import NO_SERVICE_BODY
from tests.support.http import fetch
from tests.support.replicated_plane import COPIES, Plane, replicated_plane

pytestmark = pytest.mark.real

DOMAIN = "replicated.test"
APPLIES = 50
LIVE_WITHIN_SECONDS = 5.0
START_SECONDS = 60.0


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    async with replicated_plane(tmp_path_factory.mktemp("replicated")) as started:
        yield started


def _config(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


class Writer:
    """An API client that writes to one registry copy and, when that copy is gone, to the other."""

    def __init__(self, plane: Plane) -> None:
        self._stubs = {
            copy: Stubs.connect(plane.registry_address(copy), plane.admin_tokens[copy]) for copy in COPIES
        }
        self.system = {
            copy: Stubs.connect(plane.registry_address(copy), plane.system_token) for copy in COPIES
        }
        self.retries = 0

    async def apply(self, data: dict[str, Any], prefer: str = "a") -> registry_pb2.ApplyResponse:
        order = [prefer, *[copy for copy in COPIES if copy != prefer]]
        request = registry_pb2.ApplyRequest(project="main", configuration=_config(data))
        deadline = time.monotonic() + 30
        while True:
            for copy in order:
                try:
                    return await self._stubs[copy].configurations.Apply(request, timeout=10)
                except grpc.aio.AioRpcError as error:
                    if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError("no registry copy took the write in 30 s")
            await asyncio.sleep(0.1)

    def stubs(self, copy: str) -> Stubs:
        return self._stubs[copy]

    async def close(self) -> None:
        for stubs in (*self._stubs.values(), *self.system.values()):
            await stubs.close()


async def _leader_pid(plane: Plane, role: str, other_than: int | None = None) -> int:
    """The pid of the copy holding `role`'s lease (waiting for one other than `other_than`)."""
    dsn = plane.db_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    deadline = time.monotonic() + 20
    while True:
        connection = await asyncpg.connect(dsn)
        try:
            holder = await connection.fetchval(
                "SELECT holder FROM leases WHERE name = $1 "
                "AND expires_at > extract(epoch from clock_timestamp())",
                role,
            )
        finally:
            await connection.close()
        if holder is not None and int(str(holder).split("/")[1]) != other_than:
            return int(str(holder).split("/")[1])
        assert time.monotonic() < deadline, f"no copy took the {role} lease over:\n{plane.logs()}"
        await asyncio.sleep(0.2)


def _copy_of_pid(plane: Plane, role: str, pid: int) -> str:
    return next(copy for copy in COPIES if (p := plane.of(role, copy).popen) is not None and p.pid == pid)


def _envoy_processes(local_state: Path) -> list[int]:
    """Live Envoy processes started with a bootstrap under the shared local state."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if any(str(local_state).encode() in arg and arg.endswith(b"bootstrap.json") for arg in argv):
                found.append(int(entry.name))
    return found


def _xds_copy_streamed_from(plane: Plane, envoy_pid: int) -> str:
    """Which gateway_xds copy the Envoy holds a connection to (its sockets' peers)."""
    output = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    for copy in COPIES:
        port = plane.of("xds", copy).port
        if any(re.search(rf"127\.0\.0\.1:{port}\s.*pid={envoy_pid},", line) for line in output.splitlines()):
            return copy
    raise AssertionError(f"the Envoy holds no connection to gateway_xds:\n{output}")


def _status(address: str, port: int, host: str) -> tuple[int, str]:
    return fetch(f"http://{address}:{port}/", host=host)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(b"steady replica") as server:
        yield server


async def test_killing_one_copy_of_each_process_loses_nothing(plane: Plane, upstream: Upstream) -> None:
    writer = Writer(plane)
    try:
        await _run(plane, writer, upstream)
    finally:
        await writer.close()


async def _run(plane: Plane, writer: Writer, upstream: Upstream) -> None:
    gateway_spec = {"type": "gateway", "name": "gw", "backend": "local", "region": "local", "domain": DOMAIN}
    await writer.apply(gateway_spec)
    deadline = time.monotonic() + START_SECONDS
    while True:
        gateway = await writer.stubs("b").gateways.Get(registry_pb2.GetRequest(project="main", name="gw"))
        if gateway.status.state == resources_pb2.GATEWAY_STATE_RUNNING:
            break
        assert time.monotonic() < deadline, f"the gateway never ran: {gateway.status}\n{plane.logs()}"
        await asyncio.sleep(0.2)
    address, port = gateway.status.listen_address, gateway.status.http_port
    steady = {
        "type": "service",
        "name": "steady",
        "gateway": "gw",
        "port": 8000,
        "auth": False,
        "https": False,
    }
    await writer.apply(steady)
    register = registry_pb2.RegisterReplicaRequest(
        project="main",
        service="steady",
        id="steady-0",
        address=f"127.0.0.1:{upstream.port}",
        ready=True,
        runner="test",
    )
    await writer.system["a"].replicas.Register(register)
    deadline = time.monotonic() + START_SECONDS
    while _status(address, port, f"steady.{DOMAIN}") != (200, "steady replica"):
        assert time.monotonic() < deadline, plane.logs()
        await asyncio.sleep(0.1)
    [envoy_pid] = _envoy_processes(plane.local_state)
    streamed_from = _xds_copy_streamed_from(plane, envoy_pid)
    provisioner_pid = await _leader_pid(plane, "provisioner")
    provisioner_leader = _copy_of_pid(plane, "provisioner", provisioner_pid)
    certificates_leader = _copy_of_pid(plane, "certificates", await _leader_pid(plane, "certificates"))

    load = LoadLoop(port, host=f"steady.{DOMAIN}", connections=4, address=address).start()
    acknowledged: dict[str, float] = {}
    live: dict[str, float] = {}

    async def apply_one(index: int) -> None:
        await asyncio.sleep(index * 0.04)  # spread over two seconds, the kills land in the middle
        name = f"s{index:02d}"
        spec = {"type": "service", "name": name, "gateway": "gw", "port": 8000, "auth": False, "https": False}
        await writer.apply(spec, prefer=COPIES[index % 2])
        acknowledged[name] = time.monotonic()
        while True:
            status, body = await asyncio.to_thread(_status, address, port, f"{name}.{DOMAIN}")
            # Routed: a service with no replica yet answers 503 (an unknown name, 404).
            if status == 503 and NO_SERVICE_BODY not in body:
                live[name] = time.monotonic()
                return
            await asyncio.sleep(0.05)

    async def kill_one_of_each() -> None:
        await asyncio.sleep(APPLIES * 0.04 / 2)
        plane.of("registry", "a").kill()
        plane.of("xds", streamed_from).kill()
        plane.of("provisioner", provisioner_leader).kill()
        plane.of("certificates", certificates_leader).kill()

    try:
        await asyncio.wait_for(
            asyncio.gather(kill_one_of_each(), *(apply_one(index) for index in range(APPLIES))), 120
        )
        await asyncio.to_thread(load.wait_for, load.result.total + 200)
    finally:
        result = load.stop()
    assert result.failures == 0, result.summary()
    late = {
        name: round(live[name] - acknowledged[name], 2)
        for name in live
        if live[name] - acknowledged[name] > LIVE_WITHIN_SECONDS
    }
    assert not late, f"services live later than {LIVE_WITHIN_SECONDS} s after their write: {late}"
    print(
        f"{APPLIES} applies ({writer.retries} retried on the other registry), slowest write to live "
        f"{max(live[name] - acknowledged[name] for name in live):.2f} s, {result.total} requests, 0 failed"
    )

    # Every write is there once; the surviving copies agree.
    listed = await writer.stubs("b").services.List(registry_pb2.ListServicesRequest(project="main"))
    names = sorted(service.name for service in listed.services)
    assert names == sorted(["steady", *(f"s{index:02d}" for index in range(APPLIES))])
    # One Envoy for the gateway: the provisioner that took over adopted it rather than making another.
    assert _envoy_processes(plane.local_state) == [envoy_pid]
    # The new leaders lead under a larger fence.
    new_leader = _copy_of_pid(plane, "provisioner", await _leader_pid(plane, "provisioner", provisioner_pid))
    assert new_leader != provisioner_leader
    assert _envoy_processes(plane.local_state) == [envoy_pid]
    # And a change made now is live through the surviving copies.
    await writer.apply({**steady, "name": "after"}, prefer="b")
    deadline = time.monotonic() + LIVE_WITHIN_SECONDS * 2
    while _status(address, port, f"after.{DOMAIN}")[0] != 503:
        assert time.monotonic() < deadline, plane.logs()
        await asyncio.sleep(0.05)

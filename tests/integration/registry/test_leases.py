"""One copy at a time leads a role; a crashed leader is replaced once its lease lapses, and a copy
that lost its lease has its writes refused (fencing)."""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc
import pytest
from google.protobuf import struct_pb2

from gatehouse.leadership import Leadership
from gatehouse.leases import LeaseClaim, held_claim
from gatehouse.v1 import registry_pb2
from tests.integration.registry.conftest import RegistryServer

pytestmark = pytest.mark.real

LEASE, RENEW = 1.0, 0.2


class Copy:
    """A copy of some process: its work records each moment it runs as leader."""

    def __init__(self, server: RegistryServer, role: str, name: str) -> None:
        self.stubs = server.stubs(server.system_token)
        self.leadership = Leadership(self.stubs, role, lease_seconds=LEASE, renew_seconds=RENEW)
        self.name = name
        self.leading = asyncio.Event()
        self.stopped = asyncio.Event()
        self.started_at = self.stopped_at = 0.0
        self.task = asyncio.create_task(self.leadership.run(self._work))

    async def _work(self) -> None:
        self.started_at = time.monotonic()
        self.leading.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped_at = time.monotonic()
            self.leading.clear()
            self.stopped.set()


async def _first_leader(copies: list[Copy]) -> Copy:
    async with asyncio.timeout(10):
        while True:
            leaders = [copy for copy in copies if copy.leading.is_set()]
            if leaders:
                assert len(leaders) == 1
                return leaders[0]
            await asyncio.sleep(0.02)


async def test_one_copy_leads_and_a_clean_stop_hands_over_at_once(registry_server: RegistryServer) -> None:
    role = f"role-{secrets.token_hex(3)}"
    copies = [Copy(registry_server, role, name) for name in ("a", "b", "c")]
    leader = await _first_leader(copies)
    for _ in range(10):  # a few renewals: still one leader
        await asyncio.sleep(RENEW)
        assert [copy for copy in copies if copy.leading.is_set()] == [leader]
    first_fence = leader.leadership.fence
    leader.task.cancel()
    await asyncio.gather(leader.task, return_exceptions=True)
    rest = [copy for copy in copies if copy is not leader]
    successor = await _first_leader(rest)
    assert successor.leadership.fence is not None and first_fence is not None
    assert successor.leadership.fence > first_fence
    for copy in rest:
        copy.task.cancel()
    await asyncio.gather(*(copy.task for copy in rest), return_exceptions=True)
    for copy in copies:
        await copy.stubs.close()


async def test_a_leader_cut_off_from_the_registry_stops_and_another_takes_over(
    registry_server: RegistryServer,
) -> None:
    role = f"role-{secrets.token_hex(3)}"
    copies = [Copy(registry_server, role, name) for name in ("a", "b")]
    leader = await _first_leader(copies)
    other = copies[1] if leader is copies[0] else copies[0]
    # The leader can no longer renew (as when its network or process hangs): its work stops before
    # its lease lapses, and only then does the other copy start.
    await leader.stubs.close()
    async with asyncio.timeout(LEASE * 5):
        await leader.stopped.wait()
    await _first_leader([other])
    # Never two at once: the successor started after the cut-off leader had stopped.
    assert other.started_at >= leader.stopped_at
    for copy in copies:
        copy.task.cancel()
    await asyncio.gather(*(copy.task for copy in copies), return_exceptions=True)
    await other.stubs.close()


def _gateway(project: str, name: str) -> registry_pb2.ApplyRequest:
    struct = struct_pb2.Struct()
    struct.update({"type": "gateway", "name": name, "backend": "local", "region": "local"})
    return registry_pb2.ApplyRequest(project=project, configuration=struct)


async def test_writes_under_a_lapsed_fence_are_refused(registry_server: RegistryServer) -> None:
    role = f"role-{secrets.token_hex(3)}"
    stubs = registry_server.stubs(registry_server.system_token)
    request = registry_pb2.AcquireLeaseRequest(name=role, holder="old", ttl_seconds=LEASE)
    old = await stubs.control_plane.AcquireLease(request)
    assert old.held and old.fence == 1
    await stubs.control_plane.ReleaseLease(registry_pb2.ReleaseLeaseRequest(name=role, holder="old"))
    request = registry_pb2.AcquireLeaseRequest(name=role, holder="new", ttl_seconds=LEASE)
    new = await stubs.control_plane.AcquireLease(request)
    assert new.held and new.fence == 2
    # A holder that is refused the lease is told who has it.
    request = registry_pb2.AcquireLeaseRequest(name=role, holder="third", ttl_seconds=LEASE)
    refused = await stubs.control_plane.AcquireLease(request)
    assert not refused.held and refused.holder == "new"

    token = held_claim.set(LeaseClaim(role, old.fence))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await stubs.configurations.Apply(_gateway("main", f"stale-{role}"))
    finally:
        held_claim.reset(token)
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no longer holds" in (stale.value.details() or "")
    listed = await stubs.gateways.List(registry_pb2.ListGatewaysRequest(project="main"))
    assert f"stale-{role}" not in [gateway.name for gateway in listed.gateways]

    token = held_claim.set(LeaseClaim(role, new.fence))
    try:
        await stubs.configurations.Apply(_gateway("main", f"fresh-{role}"))
    finally:
        held_claim.reset(token)
    listed = await stubs.gateways.List(registry_pb2.ListGatewaysRequest(project="main"))
    assert f"fresh-{role}" in [gateway.name for gateway in listed.gateways]
    await stubs.close()


async def test_lease_calls_are_for_gatehouse_own_services_only(registry_server: RegistryServer) -> None:
    admin = registry_server.stubs()
    request = registry_pb2.AcquireLeaseRequest(name="provisioner", holder="me", ttl_seconds=LEASE)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await admin.control_plane.AcquireLease(request)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as no_ca:
        await admin.control_plane.GetInternalCA(registry_pb2.GetInternalCARequest())
    assert no_ca.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await admin.close()


async def test_work_that_fails_stands_by_and_leads_again(registry_server: RegistryServer) -> None:
    stubs = registry_server.stubs(registry_server.system_token)
    leadership = Leadership(stubs, f"role-{secrets.token_hex(3)}", lease_seconds=LEASE, renew_seconds=RENEW)
    attempts: list[int | None] = []
    again = asyncio.Event()

    async def work() -> None:
        attempts.append(leadership.fence)
        if len(attempts) == 1:
            raise RuntimeError("the first attempt fails")
        again.set()
        await asyncio.Event().wait()

    running = asyncio.create_task(leadership.run(work))
    async with asyncio.timeout(LEASE * 5):
        await again.wait()
    assert not running.done() and attempts[0] is not None and len(attempts) == 2
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await stubs.close()

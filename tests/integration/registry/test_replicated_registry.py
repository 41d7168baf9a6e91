"""Two copies of the registry on one PostgreSQL database, each with its own empty home: a write on
either is seen at once by reads, watches and authentication on the other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography.fernet import Fernet
from google.protobuf import struct_pb2

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from services.common.grpc_server import bind_server, start_server
from services.common.settings import Settings
from services.registry.api import watch
from services.registry.app import Registry
from tests.support.databases import database_url

pytestmark = pytest.mark.real


@dataclass
class Copy:
    registry: Registry
    address: str
    server: grpc.aio.Server
    admin_token: str
    system_token: str
    runner: asyncio.Task[None]

    def stubs(self, token: str | None = None) -> Stubs:
        return Stubs.connect(self.address, token or self.admin_token)


async def _start(settings: Settings) -> Copy:
    registry = await Registry.start(settings)
    server, port = bind_server(registry.authenticator, "127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    await registry.bootstrap(settings, address)
    await start_server(server, registry.registrations())
    runner = asyncio.create_task(registry.run(settings))
    token = yaml.safe_load((settings.home / "config.yml").read_text())["token"]
    system_token = (settings.server_dir / "system-token").read_text().strip()
    return Copy(registry, address, server, token, system_token, runner)


@contextlib.asynccontextmanager
async def _environment(values: dict[str, str]) -> AsyncIterator[None]:
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
async def copies(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Copy, Copy]]:
    homes: list[Path] = [tmp_path_factory.mktemp("registry-a"), tmp_path_factory.mktemp("registry-b")]
    # What they share besides the database is given to each, as a mounted secret would be.
    shared = {"GATEHOUSE_ENCRYPTION_KEY": Fernet.generate_key().decode()}
    async with database_url("postgresql", homes[0]) as url, _environment(shared):
        base = replace(Settings.from_env(), db_url=url)
        # Both start at once: migrations and the first-start bootstrap take turns.
        started = await asyncio.gather(*(_start(replace(base, home=home)) for home in homes))
        for copy in started:
            await _listening(copy)
        yield started[0], started[1]
        for copy in started:
            copy.runner.cancel()
            await asyncio.gather(copy.runner, return_exceptions=True)
            await copy.server.stop(None)
            await copy.registry.close()


async def _listening(copy: Copy) -> None:
    for _ in range(200):
        if await copy.registry.notices.fresh():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the copy never started hearing other copies' writes")


async def test_copies_started_together_share_one_internal_ca(copies: tuple[Copy, Copy]) -> None:
    first, second = [await copy.registry.internal_ca() for copy in copies]
    assert first.certificate_pem == second.certificate_pem


def _apply(project: str, **config: Any) -> registry_pb2.ApplyRequest:
    struct = struct_pb2.Struct()
    struct.update(config)
    return registry_pb2.ApplyRequest(project=project, configuration=struct)


async def test_a_write_on_one_copy_is_read_at_once_on_the_other(copies: tuple[Copy, Copy]) -> None:
    a, b = (copy.stubs() for copy in copies)
    project = f"rep-{secrets.token_hex(3)}"
    await a.projects.Create(registry_pb2.CreateProjectRequest(name=project))
    gateway = {"type": "gateway", "name": "gw", "backend": "local", "region": "local"}
    await b.configurations.Apply(_apply(project, **gateway))
    for round_ in range(15):
        # B's answer is cached, then A changes it: B's next read shows the change.
        before = await b.services.List(registry_pb2.ListServicesRequest(project=project))
        assert len(before.services) == round_
        service = {"type": "service", "name": f"s{round_}", "gateway": "gw", "port": f"{7100 + round_}:80"}
        await a.configurations.Apply(_apply(project, **service))
        after = await b.services.List(registry_pb2.ListServicesRequest(project=project))
        assert sorted(s.name for s in after.services) == sorted(f"s{i}" for i in range(round_ + 1))
    await a.close()
    await b.close()


async def test_watchers_on_one_copy_wake_for_writes_on_the_other(
    copies: tuple[Copy, Copy], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the notice, a watcher would look again only after an hour: a woken watcher proves it.
    monkeypatch.setattr(watch, "IDLE_LOOK_AGAIN_SECONDS", 3600.0)
    first, second = copies
    a = first.stubs()
    b = Stubs.connect(second.address, second.system_token)
    project = f"wat-{secrets.token_hex(3)}"
    snapshot = await b.watch.Snapshot(registry_pb2.SnapshotRequest())
    stream = b.watch.Watch(registry_pb2.WatchRequest(since_revision=snapshot.revision))
    await a.projects.Create(registry_pb2.CreateProjectRequest(name=project))
    gateway = {"type": "gateway", "name": "gw", "backend": "local", "region": "local"}
    await a.configurations.Apply(_apply(project, **gateway))
    async with asyncio.timeout(10):
        async for event in stream:
            if event.WhichOneof("object") == "gateway" and event.gateway.project == project:
                break
    stream.cancel()
    await a.close()
    await b.close()


async def test_membership_removed_on_one_copy_is_refused_at_once_on_the_other(
    copies: tuple[Copy, Copy],
) -> None:
    a, b = (copy.stubs() for copy in copies)
    suffix = secrets.token_hex(3)
    project = f"mem-{suffix}"
    created = await a.users.Create(registry_pb2.CreateUserRequest(name=f"carol-{suffix}"))
    await a.projects.Create(registry_pb2.CreateProjectRequest(name=project))
    await a.projects.SetMember(
        registry_pb2.SetMemberRequest(project=project, user=f"carol-{suffix}", role="member")
    )
    carol_on_b = copies[1].stubs(created.token)
    listing = registry_pb2.ListGatewaysRequest(project=project)
    await carol_on_b.gateways.List(listing)  # B now remembers who carol is
    await a.projects.RemoveMember(registry_pb2.RemoveMemberRequest(project=project, user=f"carol-{suffix}"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await carol_on_b.gateways.List(listing)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await a.users.RevokeTokens(registry_pb2.RevokeTokensRequest(user=f"carol-{suffix}"))
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await carol_on_b.identity.WhoAmI(registry_pb2.WhoAmIRequest())
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for stubs in (a, b, carol_on_b):
        await stubs.close()


async def test_lease_renewals_and_heartbeats_forget_no_cached_read(copies: tuple[Copy, Copy]) -> None:
    first, second = copies
    a, b = first.stubs(), second.stubs()
    system_a = Stubs.connect(first.address, first.system_token)
    project = f"keep-{secrets.token_hex(3)}"
    await a.projects.Create(registry_pb2.CreateProjectRequest(name=project))
    await b.services.List(registry_pb2.ListServicesRequest(project=project))
    key = ("services", project)
    assert key in second.registry.ctx.reads
    for _ in range(5):
        renew = registry_pb2.AcquireLeaseRequest(name=f"role-{project}", holder="me", ttl_seconds=5)
        await system_a.control_plane.AcquireLease(renew)
    await _listening(second)  # B has heard every write taken so far
    assert key in second.registry.ctx.reads
    # A write that does change the project is still heard.
    gateway = {"type": "gateway", "name": "gw", "backend": "local", "region": "local"}
    await a.configurations.Apply(_apply(project, **gateway))
    await _listening(second)
    assert key not in second.registry.ctx.reads
    for stubs in (a, b, system_a):
        await stubs.close()

"""An in-process registry (SQLite) on a free loopback port, with stubs for its admin and system tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from gateway_xds.testing.registry_driver import RegistryDriver
from services.common.grpc_server import bind_server, start_server
from services.common.settings import Settings
from services.registry.app import Registry


@dataclass
class LiveRegistry:
    address: str
    admin_token: str
    system_token: str
    admin: Stubs  # the first admin's token (the CLI config's)
    system: Stubs

    @property
    def driver(self) -> RegistryDriver:
        """Registers replicas at 127.0.0.1, as Gatehouse's own runners do: only its token may."""
        return RegistryDriver(self.system, self.system)

    async def user_token(self, name: str, member: bool) -> str:
        """A new user's token; `member`: of project main."""
        created = await self.admin.users.Create(registry_pb2.CreateUserRequest(name=name))
        if member:
            await self.admin.projects.SetMember(registry_pb2.SetMemberRequest(project="main", user=name))
        return str(created.token)


@contextlib.asynccontextmanager
async def live_registry(home: Path) -> AsyncIterator[LiveRegistry]:
    settings = replace(
        Settings.from_env(), home=home, db_url=f"sqlite+aiosqlite:///{home / 'registry.sqlite'}"
    )
    registry = await Registry.start(settings)
    server, port = bind_server(registry.authenticator, "127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    await registry.bootstrap(settings, address)
    await start_server(server, registry.registrations())
    admin_token = yaml.safe_load((home / "config.yml").read_text())["token"]
    system_token = (home / "server" / "system-token").read_text().strip()
    admin, system = Stubs.connect(address, admin_token), Stubs.connect(address, system_token)
    try:
        yield LiveRegistry(address, admin_token, system_token, admin, system)
    finally:
        await admin.close()
        await system.close()
        await server.stop(None)
        await registry.close()

"""An in-process registry server on SQLite and on PostgreSQL, started once per module."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from gatehouse.client.connection import Stubs
from services.common.grpc_server import bind_server, start_server
from services.common.settings import Settings
from services.registry.app import Registry
from services.registry.identity import create_project, create_user, issue_token
from tests.support.databases import database_url


@dataclass
class Tenant:
    project: str
    api: Stubs


@dataclass
class RegistryServer:
    address: str
    registry: Registry
    admin_token: str
    system_token: str

    def stubs(self, token: str | None = None) -> Stubs:
        return Stubs.connect(self.address, self.admin_token if token is None else token)

    async def add_user(self, name: str, project: str) -> str:
        """A user who is admin of `project` (made if new); returns the user's token."""
        async with self.registry.ctx.db.write() as session:
            user = await create_user(session, name)
            await create_project(session, project, user)
            return await issue_token(session, user)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def registry_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RegistryServer]:
    home: Path = tmp_path_factory.mktemp("registry-home")
    async with database_url(request.param, home) as url:
        settings = replace(Settings.from_env(), home=home, db_url=url, watch_history=50)
        registry = await Registry.start(settings)
        server, port = bind_server(registry.authenticator, "127.0.0.1:0")
        address = f"127.0.0.1:{port}"
        await registry.bootstrap(settings, address)
        await start_server(server, registry.registrations())
        import yaml

        admin_token = yaml.safe_load((home / "config.yml").read_text())["token"]
        system_token = (home / "server" / "system-token").read_text().strip()
        yield RegistryServer(address, registry, admin_token, system_token)
        await server.stop(None)
        await registry.close()


@pytest.fixture
async def api(registry_server: RegistryServer) -> AsyncIterator[Stubs]:
    stubs = registry_server.stubs()
    yield stubs
    await stubs.close()


@pytest.fixture
async def tenants(registry_server: RegistryServer) -> AsyncIterator[tuple[Tenant, Tenant]]:
    """Two projects of their own, each with its admin, for each test."""
    made = []
    for _ in range(2):
        name = f"t-{secrets.token_hex(4)}"
        made.append(Tenant(name, registry_server.stubs(await registry_server.add_user(f"u-{name}", name))))
    yield made[0], made[1]
    for tenant in made:
        await tenant.api.close()

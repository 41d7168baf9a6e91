"""A registry (in-process, SQLite) and a real Pebble, once per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from gatehouse.client.connection import Stubs
from services.common.grpc_server import bind_server, start_server
from services.common.settings import Settings
from services.registry.app import Registry
from tests.support.pebble import Pebble


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    server = Pebble(tmp_path_factory.mktemp("pebble"))
    server.start()
    yield server
    server.stop()


class RegistryHandle:
    def __init__(self, registry: Registry, address: str, home: Path) -> None:
        self.registry = registry
        self.address = address
        self.admin = Stubs.connect(address, yaml.safe_load((home / "config.yml").read_text())["token"])
        self.system = Stubs.connect(address, (home / "server" / "system-token").read_text().strip())


@pytest.fixture(scope="module")
async def registry(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RegistryHandle]:
    home = tmp_path_factory.mktemp("certs-home")
    settings = replace(Settings.from_env(), home=home, db_url=f"sqlite+aiosqlite:///{home / 'r.sqlite'}")
    registry = await Registry.start(settings)
    server, port = bind_server(registry.authenticator, "127.0.0.1:0")
    await registry.bootstrap(settings, f"127.0.0.1:{port}")
    await start_server(server, registry.registrations())
    handle = RegistryHandle(registry, f"127.0.0.1:{port}", home)
    yield handle
    await handle.admin.close()
    await handle.system.close()
    await server.stop(None)
    await registry.close()

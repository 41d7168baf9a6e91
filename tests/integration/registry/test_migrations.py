"""Alembic migrations upgrade and downgrade cleanly on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from services.common.db import Database, alembic_config
from tests.support.databases import database_url

pytestmark = pytest.mark.real


def _round_trip(connection: Connection) -> list[str]:
    command.downgrade(alembic_config(connection), "base")
    assert inspect(connection).get_table_names() in ([], ["alembic_version"])
    command.upgrade(alembic_config(connection), "head")
    return sorted(inspect(connection).get_table_names())


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_upgrade_downgrade_upgrade(kind: str, tmp_path: Path) -> None:
    async with database_url(kind, tmp_path) as url:
        db = Database(url)
        await db.migrate()
        async with db.engine.begin() as connection:
            tables = await connection.run_sync(_round_trip)
        await db.close()
    assert {"gateways", "services", "replicas", "events", "secrets", "tokens"} <= set(tables)

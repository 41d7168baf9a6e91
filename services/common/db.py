"""The database: an async engine, read and write transactions, and migrations on start."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gatehouse.private_files import make_private_directory
from services.common.private_home import tighten_and_warn
from services.common.sqlite_inline import inline_connector

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _private_sqlite_files(path: Path) -> None:
    """The database file, wherever it is, readable by its owner only; SQLite makes the WAL and shared
    memory files beside it with the database's mode."""
    make_private_directory(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    tighten_and_warn(path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal"))


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                _private_sqlite_files(Path(path))
        if self.is_sqlite and not url.endswith(":memory:"):
            self.engine: AsyncEngine = create_async_engine(url, async_creator=inline_connector(url))
        else:
            self.engine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite allows one writer; taking turns here avoids lock upgrades failing under load.
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        # Called after every write with the session's info (the registry's read cache listens).
        self.after_commit: list[Callable[[dict[str, Any]], None]] = []
        # Run inside every write transaction just before it commits.
        self.before_commit: list[Callable[[AsyncSession], Awaitable[None]]] = []

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        info: dict[str, Any] = {}
        try:
            if self._write_lock is None:
                async with self._sessions() as session, session.begin():
                    info = session.info
                    yield session
                    await self._before_commit(session)
            else:
                async with self._write_lock, self._sessions() as session, session.begin():
                    info = session.info
                    yield session
                    await self._before_commit(session)
        finally:
            # Also after a rollback: a failed write may still have raced a reader's generation.
            for callback in self.after_commit:
                callback(info)

    async def _before_commit(self, session: AsyncSession) -> None:
        for hook in self.before_commit:
            await hook(session)

    async def migrate(self) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(_upgrade)

    async def close(self) -> None:
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


# Copies of the registry starting together migrate (and bootstrap) one at a time; the others then
# find nothing to do.
MIGRATION_LOCK = 0x6761746568
BOOTSTRAP_LOCK = MIGRATION_LOCK + 1
_TAKE_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


async def hold_until_commit(session: AsyncSession, key: int) -> None:
    """On PostgreSQL, waits for and holds an advisory lock until the transaction ends (SQLite's one
    writer at a time needs none)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_TAKE_LOCK, {"key": key})


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(_TAKE_LOCK, {"key": MIGRATION_LOCK})
    command.upgrade(alembic_config(connection), "head")

"""Tokens to principals: concurrent calls with one token share one database load, an unknown token
is refused to every caller, and forgetting drops what a load in flight would have remembered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import delete, event
from sqlalchemy.engine import Engine

from services.common.db import Database
from services.common.errors import Unauthenticated
from services.registry import identity
from services.registry.models import Token


@pytest.fixture
async def database(tmp_path: Path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'auth.sqlite'}")
    await db.migrate()
    return db


async def _user_with_token(db: Database, name: str) -> str:
    async with db.write() as session:
        return await identity.issue_token(session, await identity.create_user(session, name))


async def test_concurrent_calls_with_one_token_share_one_load(database: Database) -> None:
    alice, bob = await _user_with_token(database, "alice"), await _user_with_token(database, "bob")
    authenticator = identity.DatabaseAuthenticator(database)
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        principals = await asyncio.gather(
            *(authenticator.authenticate(alice if i % 2 else bob) for i in range(50))
        )
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert {p.user for p in principals[1::2]} == {"alice"} and {p.user for p in principals[::2]} == {"bob"}
    user_loads = [s for s in statements if "FROM users" in s]
    assert len(user_loads) == 2, f"{len(user_loads)} loads for two tokens"

    refused = await asyncio.gather(
        *(authenticator.authenticate("not-a-token") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(error, Unauthenticated) for error in refused)
    await database.close()


async def test_a_forget_during_a_load_is_not_undone_by_it(database: Database) -> None:
    token = await _user_with_token(database, "carol")
    authenticator = identity.DatabaseAuthenticator(database)
    loading = asyncio.ensure_future(authenticator.authenticate(token))
    await asyncio.sleep(0)
    async with database.write() as session:
        await session.execute(delete(Token))
    authenticator.forget()  # as the registry does after a write that changes identity
    await asyncio.gather(loading, return_exceptions=True)  # it read before or after: either answer
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(token)
    await database.close()

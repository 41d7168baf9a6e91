"""SQLite statements run on the event loop's thread, except what can wait: a write waiting for another
connection's lock leaves the loop free, and reads never wait for a writer."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from sqlalchemy import text

from services.common.db import Database

HELD_SECONDS = 0.6


async def _ticks_while(work: asyncio.Future[float]) -> int:
    ticks = 0
    while not work.done():
        await asyncio.sleep(0.01)
        ticks += 1
    return ticks


async def test_a_write_waiting_for_another_connections_lock_leaves_the_loop_free(tmp_path: Path) -> None:
    path = tmp_path / "inline.sqlite"
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with database.write() as session:
            await session.execute(text("CREATE TABLE notes (body TEXT)"))
            await session.execute(text("INSERT INTO notes VALUES ('first')"))
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO notes VALUES ('other')")
        release = threading.Timer(HELD_SECONDS, other.execute, args=("COMMIT",))
        release.start()

        async def write() -> float:
            started = time.monotonic()
            async with database.write() as session:
                await session.execute(text("INSERT INTO notes VALUES ('ours')"))
            return time.monotonic() - started

        async def read() -> list[str]:
            async with database.read() as session:
                return list((await session.execute(text("SELECT body FROM notes"))).scalars())

        writing = asyncio.ensure_future(write())
        # The other connection holds the write lock: a read still answers at once, from before it.
        assert await asyncio.wait_for(read(), timeout=HELD_SECONDS / 2) == ["first"]
        ticks = await _ticks_while(writing)
        waited = writing.result()
        release.join()
        other.close()
        assert waited >= HELD_SECONDS * 0.8, "the write did not wait for the lock"
        assert ticks >= 10, "the loop stood still while the write waited for the lock"
        assert sorted(await read()) == ["first", "other", "ours"]
    finally:
        await database.close()

"""SQLite connections whose statements run on the event loop's thread.

aiosqlite hands every call (cursor, execute, fetch, close) to the connection's own thread and back:
two thread switches and a GIL hand-over per call, about ten times what a statement on a local SQLite
file costs, and a write takes a dozen such calls. Here a call runs inline when it cannot wait: reads
(WAL readers never wait for a writer), fetches, and any statement of a transaction that already holds
the write lock. What can wait, on the disk or on another connection's lock (the first write of a
transaction, commit, rollback, PRAGMAs, close), still goes to the thread, so the loop never blocks on
`busy_timeout` or on fsync.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite
from sqlalchemy.engine import make_url

# A cursor's rows are in memory or a step away; making or closing one touches no lock.
_CURSOR_CALLS = frozenset({"fetchone", "fetchmany", "fetchall", "close"})
_READS = ("select", "with")


class InlineConnection(aiosqlite.Connection):
    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        connection = self._connection
        if connection is not None and self._running and _may_run_inline(connection, fn, args):
            return fn(*args, **kwargs)
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]


def _may_run_inline(connection: sqlite3.Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
    name = getattr(fn, "__name__", "")
    on_cursor = isinstance(getattr(fn, "__self__", None), sqlite3.Cursor)
    if name == "cursor" or (on_cursor and name in _CURSOR_CALLS):
        return True
    if name == "rollback":
        # Undoing takes no lock and writes nothing to wait for.
        return True
    if name == "commit":
        # Only a transaction that wrote has anything to make durable.
        return not connection.in_transaction
    if name not in ("execute", "executemany") or not args or not isinstance(args[0], str):
        return False
    # Within a write transaction the lock is held (Python's sqlite3 begins one just before the first
    # INSERT/UPDATE/DELETE); outside one, only a read cannot wait.
    return connection.in_transaction or args[0].lstrip()[:6].lower().startswith(_READS)


def inline_connector(url: str) -> Callable[[], aiosqlite.Connection]:
    """For `create_async_engine(url, async_creator=...)`: the URL's own connect arguments."""
    parsed = make_url(url)
    args, options = parsed.get_dialect()().create_connect_args(parsed)
    (database,) = args
    # Made on the connection's thread, used on the loop's as well (never both at once: every call
    # is awaited before the next).
    keywords: dict[str, Any] = {**options, "check_same_thread": False}

    def connect() -> aiosqlite.Connection:
        connection = InlineConnection(lambda: sqlite3.connect(database, **keywords), iter_chunk_size=64)
        connection._thread.daemon = True
        return connection

    return connect

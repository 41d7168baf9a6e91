"""Every copy of the registry hears every copy's writes. On PostgreSQL each write takes the next
number of a sequence and, in its own transaction, NOTIFYs it with what it touched; PostgreSQL
delivers notices at commit, in commit order, and each copy's listener then does what a local write
does: forget cached reads and principals, wake watchers.

A copy's cached read is served only while it has heard every write numbered so far (`fresh`), so a
read on one copy never shows less than a write another copy has already acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db import Database
from services.registry.feed import IDENTITY_CHANGED, PROJECTS_TOUCHED

CHANNEL = "gatehouse_writes"
# A number taken but never heard of for this long was a write that rolled back (or whose copy died
# before committing): stop waiting for it.
GAP_SECONDS = 1.0
RECONNECT_SECONDS = 0.5
KEEPALIVE_SECONDS = 5.0
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; a write touching more says "everything".
PAYLOAD_LIMIT = 7000
_TAKE_AND_NOTIFY = text("SELECT pg_notify(:channel, nextval('gatehouse_write_seq') || ' ' || :payload)")
_LAST_TAKEN = text("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM gatehouse_write_seq")

log = logging.getLogger(__name__)

# What a write changed, as a local write reports it: the projects (None: all) and whether who may do
# what changed.
OnWrite = Callable[[set[str | None] | None, bool], None]


def _payload(info: dict[str, object]) -> str:
    touched = info.get(PROJECTS_TOUCHED)
    projects = None if not isinstance(touched, set) or None in touched else sorted(touched)
    payload = json.dumps({"projects": projects, "identity": bool(info.get(IDENTITY_CHANGED))})
    if len(payload) > PAYLOAD_LIMIT:
        payload = json.dumps({"projects": None, "identity": True})
    return payload


class Watermark:
    """The highest write number below which every write has been heard (or given up on)."""

    def __init__(self, start: int = 0) -> None:
        self.value = start
        self._ahead: set[int] = set()
        self._behind_since: float | None = None
        self._behind_target = 0

    def heard(self, number: int) -> None:
        if number > self.value:
            self._ahead.add(number)
        while self.value + 1 in self._ahead:
            self.value += 1
            self._ahead.discard(self.value)

    def caught_up(self, last_taken: int, now: float) -> tuple[bool, bool]:
        """(fresh, skipped): whether every number up to `last_taken` is heard; `skipped` when numbers
        missing for GAP_SECONDS were given up on (what they changed is unknown)."""
        if last_taken <= self.value:
            self._behind_since = None
            return True, False
        if self._behind_since is None:
            self._behind_since, self._behind_target = now, last_taken
            return False, False
        if now - self._behind_since < GAP_SECONDS:
            return False, False
        # Every number taken before we noticed has committed (and been heard) or never will.
        self.value = max(self.value, self._behind_target)
        self._ahead = {number for number in self._ahead if number > self.value}
        self.heard(self.value)
        self._behind_since = None
        return last_taken <= self.value, True


class WriteNotices:
    def __init__(self, db: Database, on_write: OnWrite) -> None:
        self._db = db
        self._on_write = on_write
        self._watermark = Watermark()
        self._connected = False
        self.enabled = db.url.startswith("postgresql")
        if self.enabled:
            db.before_commit.append(self._announce)

    async def _announce(self, session: AsyncSession) -> None:
        await session.execute(_TAKE_AND_NOTIFY, {"channel": CHANNEL, "payload": _payload(session.info)})

    def _heard(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        number, _, body = str(payload).partition(" ")
        try:
            change = json.loads(body)
            projects: Iterable[str] | None = change["projects"]
            identity = bool(change["identity"])
        except (ValueError, KeyError, TypeError):
            projects, identity = None, True
        self._on_write(None if projects is None else set(projects), identity)
        with contextlib.suppress(ValueError):
            self._watermark.heard(int(number))

    async def fresh(self) -> bool:
        """Whether this copy has heard of every write taken so far (its cached reads are current)."""
        if not self.enabled:
            return True
        if not self._connected:
            return False
        async with self._db.engine.connect() as connection:
            last_taken = int((await connection.execute(_LAST_TAKEN)).scalar_one())
        fresh, skipped = self._watermark.caught_up(last_taken, time.monotonic())
        if skipped:
            self._on_write(None, True)
        return fresh

    async def run(self) -> None:
        """Listens for as long as the registry runs, reconnecting; while not listening, reads are
        not served from cache and watchers look again every second."""
        if not self.enabled:
            return
        dsn = make_url(self._db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            lost = asyncio.Event()
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(dsn, timeout=5)
                connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._heard)
                last_taken = int(await connection.fetchval(_LAST_TAKEN.text))
                # Whatever was written while not listening is unknown.
                self._watermark = Watermark(last_taken)
                self._on_write(None, True)
                self._connected = True
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                    if not lost.is_set():
                        # A dead server does not always close the socket: ask.
                        await connection.fetchval("SELECT 1", timeout=KEEPALIVE_SECONDS)
                log.warning("lost the database connection that hears other copies' writes; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                log.warning("cannot listen for other copies' writes (%s); again shortly", error)
            finally:
                self._connected = False
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=1)
            await asyncio.sleep(RECONNECT_SECONDS)

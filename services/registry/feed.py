"""The revisioned change feed: every write takes the next revision and records an event."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

from google.protobuf.message import Message
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.v1 import registry_pb2, resources_pb2
from services.common.process_metrics import REGISTRY_REVISION
from services.registry import events
from services.registry.models import Event, RevisionCounter

KINDS: dict[type[Message], str] = {
    resources_pb2.Gateway: "gateway",
    resources_pb2.Service: "service",
    resources_pb2.Replica: "replica",
    resources_pb2.TlsCertificate: "tls_certificate",
    resources_pb2.AcmeChallenge: "acme_challenge",
    resources_pb2.Credential: "credential",
}
PUT = registry_pb2.EVENT_TYPE_PUT
DELETE = registry_pb2.EVENT_TYPE_DELETE


async def next_revision(session: AsyncSession) -> int:
    """Takes the next revision; the row lock held until commit keeps revisions in commit order."""
    result = await session.execute(
        update(RevisionCounter)
        .where(RevisionCounter.id == 1)
        .values(value=RevisionCounter.value + 1)
        .returning(RevisionCounter.value)
    )
    revision = int(result.scalar_one())
    REGISTRY_REVISION.set(revision)
    return revision


async def current_revision(session: AsyncSession) -> int:
    result = await session.execute(select(RevisionCounter.value).where(RevisionCounter.id == 1))
    return int(result.scalar_one())


PROJECTS_TOUCHED = "gatehouse_projects_touched"
IDENTITY_CHANGED = "gatehouse_identity_changed"


def touch(session: AsyncSession, project: str | None) -> None:
    """Notes what a write changed: a project's name, or None for something beyond projects."""
    session.info.setdefault(PROJECTS_TOUCHED, set()).add(project)


def touch_nothing_read(session: AsyncSession) -> None:
    """Notes that a write changes nothing a cached read shows (a heartbeat, a lease): no copy's cached
    answers are forgotten for it (a record() in the same write still names its project)."""
    session.info.setdefault(PROJECTS_TOUCHED, set())


def touch_identity(session: AsyncSession) -> None:
    """Notes that a write changed who may do what (users, tokens, members, projects)."""
    session.info[IDENTITY_CHANGED] = True


def record(session: AsyncSession, revision: int, event_type: int, obj: Message) -> None:
    touch(session, getattr(obj, "project", None) or None)
    events.of_write(session, event_type == DELETE, obj)
    session.add(
        Event(revision=revision, kind=KINDS[type(obj)], type=event_type, payload=obj.SerializeToString())
    )


def to_watch_event(row: Event) -> registry_pb2.WatchEvent:
    event = registry_pb2.WatchEvent(revision=row.revision, type=cast(registry_pb2.EventType, row.type))
    getattr(event, row.kind).ParseFromString(row.payload)
    return event


async def events_after(session: AsyncSession, revision: int, limit: int) -> Sequence[Event]:
    result = await session.execute(
        select(Event).where(Event.revision > revision).order_by(Event.revision).limit(limit)
    )
    return result.scalars().all()


async def oldest_kept(session: AsyncSession) -> int | None:
    return (await session.execute(select(func.min(Event.revision)))).scalar_one_or_none()


async def compact(session: AsyncSession, keep: int) -> None:
    newest = await current_revision(session)
    await session.execute(delete(Event).where(Event.revision <= newest - keep))


class Broadcaster:
    """Wakes every watcher after a commit; a watcher arms before it reads so no commit slips between."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def arm(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        return waiter

    async def wait(self, waiter: asyncio.Future[None], timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

"""Leases on roles, kept on the database's clock (the copies' clocks are never compared)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.leases import LeaseClaim
from services.common.errors import FailedPrecondition
from services.registry import feed
from services.registry.models import LeaseRow

_NOW = {
    "postgresql": text("SELECT extract(epoch from clock_timestamp())"),
    "sqlite": text("SELECT (julianday('now') - 2440587.5) * 86400.0"),
}


async def database_now(session: AsyncSession) -> float:
    return float((await session.execute(_NOW[session.get_bind().dialect.name])).scalar_one())


@dataclass(frozen=True)
class LeaseState:
    holder: str
    fence: int
    held: bool
    remaining: float


async def acquire(session: AsyncSession, name: str, holder: str, ttl: float) -> LeaseState:
    """Renews the holder's lease, or takes a lapsed one (the fence grows), or says who holds it."""
    feed.touch_nothing_read(session)
    now = await database_now(session)
    row = await session.get(LeaseRow, name, with_for_update=True)
    if row is None:
        row = LeaseRow(name=name, holder=holder, fence=1, expires_at=now + ttl)
        session.add(row)
        await session.flush()
    elif row.holder == holder:
        row.expires_at = now + ttl
    elif row.expires_at <= now:
        row.holder, row.fence, row.expires_at = holder, row.fence + 1, now + ttl
    return LeaseState(row.holder, row.fence, row.holder == holder, max(0.0, row.expires_at - now))


async def release(session: AsyncSession, name: str, holder: str) -> LeaseState | None:
    """Lapses the holder's lease now; the row (and its fence) stays, so the next holder's is larger."""
    feed.touch_nothing_read(session)
    row = await session.get(LeaseRow, name, with_for_update=True)
    if row is None:
        return None
    if row.holder == holder:
        row.expires_at = 0.0
    return LeaseState(row.holder, row.fence, False, 0.0)


async def check_fence(session: AsyncSession, claim: LeaseClaim) -> None:
    """Inside a write: refuses it unless `claim` is the lease's current fence (the lease row stays
    locked until the write commits, so no one takes the lease over half-way)."""
    found = await session.execute(
        select(LeaseRow.fence).where(LeaseRow.name == claim.role).with_for_update(read=True)
    )
    fence = found.scalar_one_or_none()
    if fence != claim.fence:
        raise FailedPrecondition(
            f'this copy no longer holds the "{claim.role}" lease (fence {claim.fence}, now {fence}): '
            "another copy has taken its work over"
        )

"""Replicas that stop heart-beating expire: the registry unregisters them after the TTL.

Replicas of the provisioner's own local runner are watched by the provisioner instead."""

from __future__ import annotations

import asyncio
import datetime
import logging

from sqlalchemy import select

from services.registry import replicas
from services.registry.api.context import RegistryContext
from services.registry.models import ReplicaRow, utcnow

log = logging.getLogger(__name__)


def _aware(moment: datetime.datetime) -> datetime.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


async def sweep(ctx: RegistryContext, ttl_seconds: float) -> int:
    """Unregisters stale replicas; returns how many."""
    cutoff = utcnow() - datetime.timedelta(seconds=ttl_seconds)
    async with ctx.read() as session:
        candidates = await session.execute(
            select(ReplicaRow.id, ReplicaRow.heartbeat_at).where(ReplicaRow.runner != replicas.LOCAL_RUNNER)
        )
        stale = [replica_id for replica_id, beat in candidates.all() if _aware(beat) < cutoff]
    if not stale:
        return 0
    expired = 0
    async with ctx.write() as session:
        for replica_id in stale:
            row = await session.get(ReplicaRow, replica_id)
            if row is not None and row.runner != replicas.LOCAL_RUNNER and _aware(row.heartbeat_at) < cutoff:
                await replicas.unregister(session, row)
                expired += 1
                log.info("replica %s stopped heart-beating for %ss: it expired", replica_id, ttl_seconds)
    return expired


async def sweep_forever(ctx: RegistryContext, ttl_seconds: float) -> None:
    while True:
        await asyncio.sleep(max(0.2, ttl_seconds / 3))
        try:
            await sweep(ctx, ttl_seconds)
        except Exception:
            log.exception("sweeping stale replicas failed")

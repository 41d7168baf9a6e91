"""What every registry servicer shares: the database, the cipher and the change broadcaster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.addresses import Network
from services.common.auth import current_lease_claim
from services.common.crypto import Cipher
from services.common.db import Database
from services.common.errors import AlreadyExists
from services.registry import events, feed, leases
from services.registry.access_logs import AccessLogStore
from services.registry.api.read_cache import ReadCache
from services.registry.feed import Broadcaster
from services.registry.replica_admission import ReplicaAdmission
from services.registry.reserved_ports import ReservedPorts
from services.registry.service_stats import ServiceStatsStore

COMPACT_EVERY = 1000


@dataclass
class RegistryContext:
    db: Database
    cipher: Cipher
    broadcaster: Broadcaster
    watch_history: int
    admission: ReplicaAdmission
    reserved_ports: ReservedPorts
    # Private networks projects' backend endpoints may reach (settings.project_backend_networks).
    backend_networks: tuple[Network, ...] = ()
    # Called after writes that change who may do what (users, tokens, members, projects).
    forget_principals: Callable[[], None] = lambda: None
    reads: ReadCache = field(default_factory=ReadCache)
    access_logs: AccessLogStore = field(default_factory=AccessLogStore)
    service_stats: ServiceStatsStore = field(default_factory=ServiceStatsStore)
    _writes: int = 0

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction; watchers wake once it commits."""
        claim = current_lease_claim()
        try:
            async with self.db.write() as session:
                if claim is not None:
                    await leases.check_fence(session, claim)
                yield session
                await events.prune(session)
                self._writes += 1
                if self._writes % COMPACT_EVERY == 0:
                    await feed.compact(session, self.watch_history)
                    await events.expire(session)
        except IntegrityError:
            # Two concurrent applies raced for the same name, port or hostname; the loser gets this.
            raise AlreadyExists(
                "a concurrent change took the same name, port or hostname: apply again"
            ) from None
        self.broadcaster.notify()

    def read(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self.db.read()

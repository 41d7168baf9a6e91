"""Snapshot (list at a revision) and Watch (every change after it), for Gatehouse's own services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import OutOfRange
from services.registry import certificates, credentials, feed, gateways, replicas, services
from services.registry.api.context import RegistryContext
from services.registry.convert import gateway_message, replica_message

BATCH = 500
IDLE_LOOK_AGAIN_SECONDS = 1.0


class WatchServicer(registry_pb2_grpc.WatchServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def Snapshot(
        self,
        request: registry_pb2.SnapshotRequest,
        context: grpc.aio.ServicerContext[registry_pb2.SnapshotRequest, registry_pb2.SnapshotResponse],
    ) -> registry_pb2.SnapshotResponse:
        current_principal().require_system()
        async with self._ctx.read() as session:
            if not self._ctx.db.is_sqlite:
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            revision = await feed.current_revision(session)
            gateway_rows = await gateways.list_rows(session)
            envoys = await gateways.envoys_of(session, [row.id for row in gateway_rows])
            service_rows = await services.list_rows(session)
            return registry_pb2.SnapshotResponse(
                revision=revision,
                gateways=[gateway_message(row, envoys.get(row.id)) for row in gateway_rows],
                services=await services.messages(session, service_rows),
                replicas=[replica_message(row) for row in await replicas.list_rows(session)],
                tls_certificates=[
                    certificates.certificate_message(row) for row in await certificates.list_rows(session)
                ],
                credentials=await credentials.all_credentials(session),
                acme_challenges=[
                    certificates.challenge_message(row) for row in await certificates.challenges(session)
                ],
            )

    async def Watch(
        self,
        request: registry_pb2.WatchRequest,
        context: grpc.aio.ServicerContext[registry_pb2.WatchRequest, registry_pb2.WatchEvent],
    ) -> AsyncIterator[registry_pb2.WatchEvent]:
        current_principal().require_system()
        after = request.since_revision
        async with self._ctx.read() as session:
            oldest = await feed.oldest_kept(session)
            newest = await feed.current_revision(session)
        if after < newest and (oldest is None or after < oldest - 1):
            raise OutOfRange(f"revision {after} is older than the feed keeps: list again")
        while True:
            waiter = self._ctx.broadcaster.arm()
            async with self._ctx.read() as session:
                rows = await feed.events_after(session, after, BATCH)
                if rows and rows[0].revision > after + 1:
                    # Revisions without events are normal; compacted events are not.
                    oldest = await feed.oldest_kept(session)
                    if oldest is not None and after < oldest - 1 and rows[0].revision == oldest:
                        raise OutOfRange(f"revision {after} is older than the feed keeps: list again")
            for row in rows:
                yield feed.to_watch_event(row)
                after = row.revision
            if len(rows) < BATCH:
                await self._ctx.broadcaster.wait(waiter, IDLE_LOOK_AGAIN_SECONDS)

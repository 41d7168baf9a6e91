"""Replica operations: runners register the addresses the gateway routes to.

A service without `commands` is as its replicas say: running once one is ready. (With `commands`,
the provisioner's local runner writes the service's state.)"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse import runners
from gatehouse.v1 import resources_pb2
from services.common.errors import InvalidArgument, NotFound
from services.registry import feed, services
from services.registry.convert import replica_message, service_config, service_status
from services.registry.models import ReplicaRow, ServiceRow, utcnow
from services.registry.replica_addresses import split_host_port

# Gatehouse's own runners: the provisioner's local runner (it watches its replicas itself) and the
# tunnel that registers agents.
LOCAL_RUNNER = runners.LOCAL
AGENT_RUNNER = runners.AGENT
GATEHOUSE_RUNNERS = runners.OWN
RUNNING = resources_pb2.SERVICE_STATE_RUNNING
MAX_VERSION_CHARS = 64


async def _settle(session: AsyncSession, service_id: str) -> None:
    service = await session.get(ServiceRow, service_id)
    if service is None or service_config(service).commands:
        return
    ready = (await services.ready_counts(session, [service])).get(service_id, 0)
    if ready:
        status = resources_pb2.ServiceStatus(state=RUNNING)
    elif service_status(service).state == RUNNING:
        status = resources_pb2.ServiceStatus(
            state=resources_pb2.SERVICE_STATE_PROVISIONING, message="waiting for a ready replica"
        )
    else:
        return
    await services.set_status(session, service, status, ready)


async def register(
    session: AsyncSession,
    service: ServiceRow,
    replica_id: str,
    address: str,
    ready: bool,
    runner: str,
    version: str = "",
) -> ReplicaRow:
    split_host_port(address)
    if not replica_id:
        raise InvalidArgument("a replica needs an id")
    if len(version) > MAX_VERSION_CHARS:
        raise InvalidArgument(
            f"the version is {len(version)} characters: use at most {MAX_VERSION_CHARS} (v2, a commit hash)"
        )
    if not version.isprintable():
        raise InvalidArgument("the version has a control character: use printable text (v2, a commit hash)")
    row = await session.get(ReplicaRow, replica_id)
    if row is not None and row.service_id != service.id:
        raise InvalidArgument(f'replica id "{replica_id}" belongs to another service')
    if row is not None and (row.address, row.ready, row.runner, row.version) == (
        address,
        ready,
        runner,
        version,
    ):
        row.heartbeat_at = utcnow()
        return row
    revision = await feed.next_revision(session)
    if row is None:
        row = ReplicaRow(id=replica_id, project_id=service.project_id, service_id=service.id)
        session.add(row)
    if row.address != address:
        row.probed = False  # another address is probed afresh
    row.address, row.ready, row.runner, row.version = address, ready, runner, version
    row.resource_version = revision
    row.heartbeat_at = utcnow()
    await session.flush()
    feed.record(session, revision, feed.PUT, replica_message(row))
    await _settle(session, service.id)
    return row


async def get(session: AsyncSession, replica_id: str) -> ReplicaRow:
    row = await session.get(ReplicaRow, replica_id)
    if row is None:
        raise NotFound(f'replica "{replica_id}" is not registered')
    return row


async def heartbeat(session: AsyncSession, row: ReplicaRow, ready: bool) -> None:
    feed.touch_nothing_read(session)
    row.heartbeat_at = utcnow()
    await set_ready(session, row, ready)


async def set_ready(session: AsyncSession, row: ReplicaRow, ready: bool) -> None:
    if row.ready != ready:
        revision = await feed.next_revision(session)
        row.ready = ready
        row.resource_version = revision
        feed.record(session, revision, feed.PUT, replica_message(row))
        await _settle(session, row.service_id)


async def set_probed(session: AsyncSession, row: ReplicaRow, passing: bool) -> None:
    if row.probed != passing:
        row.probed = passing
        row.resource_version = await feed.next_revision(session)
        feed.record(session, row.resource_version, feed.PUT, replica_message(row))
        await _settle(session, row.service_id)


async def unregister(session: AsyncSession, row: ReplicaRow) -> None:
    revision = await feed.next_revision(session)
    feed.record(session, revision, feed.DELETE, replica_message(row))
    await session.delete(row)
    await _settle(session, row.service_id)


async def newest_revisions(session: AsyncSession, service_ids: Sequence[str]) -> dict[str, int]:
    """Per service, the revision of its replicas' latest change."""
    if not service_ids:
        return {}
    result = await session.execute(
        select(ReplicaRow.service_id, func.max(ReplicaRow.resource_version))
        .where(ReplicaRow.service_id.in_(service_ids))
        .group_by(ReplicaRow.service_id)
    )
    return {service_id: int(revision) for service_id, revision in result.all()}


async def list_rows(session: AsyncSession, service_id: str | None = None) -> Sequence[ReplicaRow]:
    query = select(ReplicaRow).order_by(ReplicaRow.id)
    if service_id is not None:
        query = query.where(ReplicaRow.service_id == service_id)
    return (await session.execute(query)).scalars().all()

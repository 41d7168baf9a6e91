"""Recent events of gateways, services and certificates, and who made each change.

Every write of one of them goes through the feed (feed.record), which adds its event here: a user's
change names the user, Gatehouse's own (the provisioner's steps, certificates, the autoscaler)
`gatehouse`, with the state and message the write set. A resource keeps its last MAX_PER_RESOURCE
events (the rest are deleted in the same transaction), none older than KEPT_DAYS."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence

from google.protobuf.message import Message
from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.v1 import registry_pb2, resources_pb2
from services.common.auth import current_principal
from services.common.errors import Unauthenticated
from services.registry.convert import timestamp
from services.registry.models import GatewayRow, ResourceEventRow, utcnow

MAX_PER_RESOURCE = 50
# Events of resources long gone (and old ones of any) leave after this.
KEPT_DAYS = 14
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
SYSTEM = "gatehouse"
NORMAL, WARNING = "Normal", "Warning"
_TOUCHED = "gatehouse_events_touched"
_EXPLAINED = "gatehouse_event_explained"


def principal_name() -> str:
    try:
        principal = current_principal()
    except Unauthenticated:
        return SYSTEM
    return SYSTEM if principal.system else f"user:{principal.user}"


def explain(session: AsyncSession, reason: str, message: str) -> None:
    """The reason and message of the next write's event, where the write alone cannot say (scaling)."""
    session.info[_EXPLAINED] = (reason, message)


def add(
    session: AsyncSession,
    *,
    project: str,
    kind: str,
    resource_id: str,
    name: str,
    type: str,
    reason: str,
    message: str,
    gateway: str = "",
) -> None:
    if not project:
        return
    session.add(
        ResourceEventRow(
            project_id=project,
            kind=kind,
            resource_id=resource_id,
            name=name[:255],
            gateway=gateway[:64],
            type=type,
            reason=reason[:64],
            message=message[:4096],
            principal=principal_name()[:255],
        )
    )
    session.info.setdefault(_TOUCHED, set()).add(resource_id)


def _state(value: int, enum: object, prefix: str) -> str:
    name = enum.Name(value) if value else ""  # type: ignore[attr-defined]
    return name.removeprefix(prefix).capitalize() or "Changed"


def of_write(session: AsyncSession, deleted: bool, obj: Message) -> None:
    """The event of a feed write of `obj` (feed.record calls this)."""
    explained = session.info.pop(_EXPLAINED, None)
    user = principal_name() != SYSTEM
    if isinstance(obj, resources_pb2.Gateway):
        state = _state(obj.status.state, resources_pb2.GatewayState, "GATEWAY_STATE_")
        failed = obj.status.state == resources_pb2.GATEWAY_STATE_FAILED
        kind, name, gateway, message = "gateway", obj.name, obj.name, obj.status.message
    elif isinstance(obj, resources_pb2.Service):
        state = _state(obj.status.state, resources_pb2.ServiceState, "SERVICE_STATE_")
        failed = obj.status.state == resources_pb2.SERVICE_STATE_FAILED
        kind, name, gateway = "service", obj.name, obj.status.gateway_name
        replicas = f"{obj.status.ready_replicas}/{obj.status.desired_replicas} replicas ready"
        message = "; ".join(part for part in (obj.status.message, replicas) if part)
    elif isinstance(obj, resources_pb2.TlsCertificate):
        state = obj.state.capitalize() or "Pending"
        failed = obj.state == "failed"
        kind, name, gateway, message = "certificate", ",".join(obj.hostnames), "", obj.message
    else:
        return
    if deleted:
        reason, message, failed = "Deleted", "", False
    elif explained is not None:
        reason, message = explained
    elif user:
        reason, message = (
            ("Deleting", "")
            if state == "Deleting"
            else ("Applied", f"generation {getattr(obj, 'generation', 0)}")
        )
    else:
        reason = state
    add(
        session,
        project=obj.project,
        kind=kind,
        resource_id=obj.id,
        name=name,
        type=WARNING if failed else NORMAL,
        reason=reason,
        message=message,
        gateway=gateway,
    )


async def prune(session: AsyncSession) -> None:
    """Keep the last MAX_PER_RESOURCE events of each resource this transaction added events to."""
    touched = session.info.pop(_TOUCHED, set())
    if touched:
        await session.flush()
    for resource_id in touched:
        oldest_kept = (
            select(ResourceEventRow.id)
            .where(ResourceEventRow.resource_id == resource_id)
            .order_by(ResourceEventRow.id.desc())
            .offset(MAX_PER_RESOURCE - 1)
            .limit(1)
            .scalar_subquery()
        )
        await session.execute(
            delete(ResourceEventRow).where(
                ResourceEventRow.resource_id == resource_id, ResourceEventRow.id < oldest_kept
            )
        )


async def expire(session: AsyncSession) -> None:
    cutoff = utcnow() - datetime.timedelta(days=KEPT_DAYS)
    await session.execute(delete(ResourceEventRow).where(ResourceEventRow.created_at < cutoff))


async def listed(
    session: AsyncSession, project: str, gateway: str = "", service: str = "", limit: int = 0
) -> Sequence[registry_pb2.ResourceEvent]:
    query = select(ResourceEventRow).where(ResourceEventRow.project_id == project)
    if gateway:
        query = query.where(
            or_(
                (ResourceEventRow.kind == "gateway") & (ResourceEventRow.name == gateway),
                ResourceEventRow.gateway == gateway,
            )
        )
    if service:
        query = query.where(ResourceEventRow.kind == "service", ResourceEventRow.name == service)
    count = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
    rows = (await session.execute(query.order_by(ResourceEventRow.id.desc()).limit(count))).scalars()
    return [
        registry_pb2.ResourceEvent(
            project=row.project_id,
            kind=row.kind,
            name=row.name,
            type=row.type,
            reason=row.reason,
            message=row.message,
            principal=row.principal,
            time=timestamp(row.created_at),
        )
        for row in rows
    ]


def of_report(
    session: AsyncSession,
    gateway: GatewayRow,
    before: Mapping[str, str],
    envoys: Iterable[resources_pb2.EnvoyStatus],
) -> None:
    """An Envoy that starts refusing configuration (a NACK, with Envoy's reason), or stops."""
    for envoy in envoys:
        was = before.get(envoy.node_id, "")
        if envoy.rejected == was:
            continue
        refused = bool(envoy.rejected)
        add(
            session,
            project=gateway.project_id,
            kind="gateway",
            resource_id=gateway.id,
            name=gateway.name,
            type=WARNING if refused else NORMAL,
            reason="EnvoyRejected" if refused else "EnvoyAccepted",
            message=f"{envoy.node_id}: {envoy.rejected}"
            if refused
            else f"{envoy.node_id} accepts its configuration",
            gateway=gateway.name,
        )

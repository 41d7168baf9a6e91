"""Gateway operations inside one write transaction: apply, plan, delete, status."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.v1 import resources_pb2
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.registry import certificates, feed, local_addresses
from services.registry.configurations import GatewayConfig
from services.registry.convert import gateway_config, gateway_message, gateway_status, status_json
from services.registry.models import EnvoyStatusRow, GatewayRow, ServiceRow
from services.registry.names import new_id, readable_name

# Fields a running gateway can change without a new host.
IN_PLACE = ("domain", "default", "replicas", "tags", "replica_networks")
FAILED = resources_pb2.GATEWAY_STATE_FAILED
DELETING = resources_pb2.GATEWAY_STATE_DELETING

PRIVATE_BACKENDS = ("aws", "gcp", "local")


def check_backend_rules(config: GatewayConfig) -> None:
    if not config.public_ip and config.backend not in PRIVATE_BACKENDS:
        raise InvalidArgument(
            f"`public_ip: false`: private gateways exist on {', '.join(PRIVATE_BACKENDS)}, "
            f"not {config.backend}"
        )
    if config.certificate is not None and config.certificate.type == "acm" and config.backend != "aws":
        raise InvalidArgument("`certificate: acm` works on the aws backend only")
    if config.backend in ("local", "kubernetes") and config.instance_type:
        raise InvalidArgument(f"`instance_type`: the {config.backend} backend has no instance types")
    if config.backend != "local" and config.address is not None:
        raise InvalidArgument("`address` is for the local backend: a cloud gives its gateways their address")


async def find(session: AsyncSession, project: str, name: str) -> GatewayRow | None:
    result = await session.execute(
        select(GatewayRow).where(GatewayRow.project_id == project, GatewayRow.name == name)
    )
    return result.scalar_one_or_none()


async def get(session: AsyncSession, project: str, name: str) -> GatewayRow:
    row = await find(session, project, name)
    if row is None:
        raise NotFound(f'gateway "{name}" not found in project "{project}"')
    return row


async def find_by_source(session: AsyncSession, project: str, source: str) -> GatewayRow | None:
    if not source:
        return None
    result = await session.execute(
        select(GatewayRow).where(GatewayRow.project_id == project, GatewayRow.source == source)
    )
    return result.scalars().first()


async def list_rows(session: AsyncSession, project: str | None = None) -> Sequence[GatewayRow]:
    query = select(GatewayRow).order_by(GatewayRow.created_at, GatewayRow.name)
    if project is not None:
        query = query.where(GatewayRow.project_id == project)
    return (await session.execute(query)).scalars().all()


async def envoys_of(session: AsyncSession, gateway_ids: Sequence[str]) -> dict[str, list[EnvoyStatusRow]]:
    if not gateway_ids:
        return {}
    rows = await session.execute(
        select(EnvoyStatusRow)
        .where(EnvoyStatusRow.gateway_id.in_(gateway_ids))
        .order_by(EnvoyStatusRow.node_id)
    )
    result: dict[str, list[EnvoyStatusRow]] = {}
    for row in rows.scalars():
        result.setdefault(row.gateway_id, []).append(row)
    return result


async def message(session: AsyncSession, row: GatewayRow) -> resources_pb2.Gateway:
    envoys = await envoys_of(session, [row.id])
    return gateway_message(row, envoys.get(row.id))


def diff(current: GatewayConfig, desired: GatewayConfig, is_default: bool) -> tuple[list[str], bool]:
    """The changed fields as readable lines, and whether every change can be made in place."""
    changes: list[str] = []
    in_place = True
    before = current.model_dump(exclude={"name", "router"})
    after = desired.model_dump(exclude={"name", "router"})
    before["default"] = is_default
    if after["address"] is None:
        after["address"] = before["address"]  # the address it was given is kept
    for field, value in after.items():
        if field == "default" and not value:
            continue
        if before.get(field) != value:
            changes.append(f"{field}: {before.get(field)!r} -> {value!r}")
            in_place = in_place and field in IN_PLACE
    return changes, in_place


async def resolve_target(
    session: AsyncSession, project: str, config: GatewayConfig, source: str
) -> GatewayRow | None:
    if config.name is not None:
        return await find(session, project, config.name)
    return await find_by_source(session, project, source)


async def apply(
    session: AsyncSession,
    project: str,
    config: GatewayConfig,
    source: str,
    expected_version: int,
    force: bool,
) -> GatewayRow:
    check_backend_rules(config)
    # Taken first: its row lock orders concurrent applies, so two first gateways of a project cannot
    # both become its default.
    revision = await feed.next_revision(session)
    row = await resolve_target(session, project, config, source)
    await _check_domain_free(session, project, config)
    config = local_addresses.place(config, row, await list_rows(session))
    if row is None:
        row = await _create(session, project, config, source)
    elif not await _update(session, row, config, expected_version, force):
        return row
    row.resource_version = revision
    await session.flush()
    feed.record(session, row.resource_version, feed.PUT, await message(session, row))
    await touch_users(session, row.id)
    return row


async def _check_domain_free(session: AsyncSession, project: str, config: GatewayConfig) -> None:
    """A domain belongs to one project: another project claiming it would receive its traffic and
    could get certificates for it. (One project may have several gateways on it, public and private.)"""
    if config.domain is None:
        return
    for other in await list_rows(session):
        if other.project_id != project and gateway_config(other).domain == config.domain:
            # Never the owner's names: which projects exist is not another tenant's business.
            raise AlreadyExists(f"domain {config.domain} belongs to another project: use another domain")


async def touch_users(session: AsyncSession, gateway_id: str) -> None:
    """Reads about a gateway show in the projects of the services on it (services of other projects
    may use it): their cached answers must go too."""
    found = await session.execute(
        select(ServiceRow.project_id).where(ServiceRow.gateway_id == gateway_id).distinct()
    )
    for project in found.scalars():
        feed.touch(session, project)


async def _create(session: AsyncSession, project: str, config: GatewayConfig, source: str) -> GatewayRow:
    if config.name is not None:
        name = config.name
    else:
        taken = (
            await session.execute(select(GatewayRow.name).where(GatewayRow.project_id == project))
        ).scalars()
        name = readable_name("gatehouse-gateway-", set(taken))
    has_default = await session.execute(
        select(GatewayRow.id)
        .where(GatewayRow.project_id == project, GatewayRow.is_default.is_(True))
        .limit(1)
    )
    make_default = config.default or has_default.scalar_one_or_none() is None
    if make_default:
        await _clear_default(session, project)
    row = GatewayRow(
        id=new_id("gw"),
        project_id=project,
        name=name,
        spec=config.model_copy(update={"name": name}).model_dump_json(),
        source=source,
        is_default=make_default,
        status=status_json(resources_pb2.GatewayStatus(state=resources_pb2.GATEWAY_STATE_SUBMITTED)),
        generation=1,
        resource_version=0,
    )
    session.add(row)
    return row


async def _update(
    session: AsyncSession,
    row: GatewayRow,
    config: GatewayConfig,
    expected_version: int,
    force: bool,
) -> bool:
    """Changes the row in place; False when there was nothing to change."""
    state = gateway_status(row).state
    if state == FAILED:
        raise FailedPrecondition(f'gateway "{row.name}" failed: delete it and apply the configuration again')
    if state == DELETING:
        raise FailedPrecondition(f'gateway "{row.name}" is being deleted: wait, then apply again')
    if expected_version and expected_version != row.resource_version and not force:
        raise FailedPrecondition(
            f'gateway "{row.name}" changed since the plan (version {row.resource_version}, '
            f"plan {expected_version}): look at the plan again, or pass --force"
        )
    changes, in_place = diff(gateway_config(row), config, row.is_default)
    if not in_place:
        raise FailedPrecondition(
            f'gateway "{row.name}" cannot be updated in place ({"; ".join(changes)}): '
            "delete it and apply again"
        )
    if not changes:
        return False
    if config.default and not row.is_default:
        await _clear_default(session, row.project_id)
        row.is_default = True
    row.spec = config.model_copy(update={"name": row.name}).model_dump_json()
    row.generation += 1
    return True


async def _clear_default(session: AsyncSession, project: str) -> None:
    result = await session.execute(
        select(GatewayRow).where(GatewayRow.project_id == project, GatewayRow.is_default.is_(True))
    )
    for other in result.scalars().all():
        other.is_default = False
        other.resource_version = await feed.next_revision(session)
        feed.record(session, other.resource_version, feed.PUT, await message(session, other))


async def make_default(session: AsyncSession, row: GatewayRow) -> None:
    if row.is_default:
        return
    await _clear_default(session, row.project_id)
    row.is_default = True
    row.resource_version = await feed.next_revision(session)
    feed.record(session, row.resource_version, feed.PUT, await message(session, row))


async def services_using(session: AsyncSession, gateway_id: str) -> Sequence[ServiceRow]:
    result = await session.execute(
        select(ServiceRow).where(ServiceRow.gateway_id == gateway_id).order_by(ServiceRow.name)
    )
    return result.scalars().all()


async def mark_deleting(session: AsyncSession, row: GatewayRow) -> None:
    """Deletion is the provisioner's to finish: it removes the host, then finalizes."""
    status = gateway_status(row)
    if status.state == DELETING:
        return
    status.state = DELETING
    status.message = ""
    revision = await feed.next_revision(session)
    row.status = status_json(status)
    row.resource_version = revision
    feed.record(session, revision, feed.PUT, await message(session, row))
    await touch_users(session, row.id)


async def finalize(session: AsyncSession, row: GatewayRow) -> None:
    await certificates.remove_for_gateway(session, row.id)
    revision = await feed.next_revision(session)
    last = await message(session, row)
    await session.execute(update(ServiceRow).where(ServiceRow.gateway_id == row.id).values(gateway_id=None))
    await session.delete(row)
    feed.record(session, revision, feed.DELETE, last)


async def set_status(session: AsyncSession, row: GatewayRow, status: resources_pb2.GatewayStatus) -> None:
    if gateway_status(row).state == DELETING and status.state != DELETING:
        status.state = DELETING
    del status.envoys[:]
    encoded = status_json(status)
    if encoded == row.status:
        return
    revision = await feed.next_revision(session)
    row.status = encoded
    row.resource_version = revision
    feed.record(session, revision, feed.PUT, await message(session, row))
    await touch_users(session, row.id)

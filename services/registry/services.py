"""Service operations inside one write transaction: gateway resolution, the port rule, apply, delete."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse import rollouts, runners
from gatehouse.v1 import resources_pb2
from services.common.auth import Principal
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.registry import credentials, events, feed, gateways
from services.registry.configurations import ServiceConfig
from services.registry.convert import (
    gateway_config,
    gateway_status,
    replica_message,
    service_config,
    service_message,
    service_status,
    status_json,
)
from services.registry.models import GatewayRow, ReplicaRow, ServiceRow, TlsCertificateRow
from services.registry.names import new_id, readable_name
from services.registry.reserved_ports import ReservedPorts

USABLE_GATEWAY_STATES = (
    resources_pb2.GATEWAY_STATE_SUBMITTED,
    resources_pb2.GATEWAY_STATE_PROVISIONING,
    resources_pb2.GATEWAY_STATE_RUNNING,
)


async def find(session: AsyncSession, project: str, name: str) -> ServiceRow | None:
    result = await session.execute(
        select(ServiceRow).where(ServiceRow.project_id == project, ServiceRow.name == name)
    )
    return result.scalar_one_or_none()


async def get(session: AsyncSession, project: str, name: str) -> ServiceRow:
    row = await find(session, project, name)
    if row is None:
        raise NotFound(f'service "{name}" not found in project "{project}"')
    return row


async def list_rows(session: AsyncSession, project: str | None = None) -> Sequence[ServiceRow]:
    query = select(ServiceRow).order_by(ServiceRow.created_at, ServiceRow.name)
    if project is not None:
        query = query.where(ServiceRow.project_id == project)
    return (await session.execute(query)).scalars().all()


async def ready_counts(session: AsyncSession, service_ids: Sequence[str]) -> dict[str, int]:
    if not service_ids:
        return {}
    result = await session.execute(
        select(ReplicaRow.service_id, ReplicaRow.runner, ReplicaRow.probed, func.count())
        .where(ReplicaRow.service_id.in_(service_ids), ReplicaRow.ready.is_(True))
        .group_by(ReplicaRow.service_id, ReplicaRow.runner, ReplicaRow.probed)
    )
    counted = result.all()
    # Replicas others run, of services with probes, count once the probes pass against them.
    unprobed = {service_id for service_id, runner, probed, _ in counted if not probed}
    probing = set()
    if unprobed:
        rows = await session.execute(select(ServiceRow).where(ServiceRow.id.in_(unprobed)))
        probing = {row.id for row in rows.scalars() if service_config(row).probes}
    counts: dict[str, int] = {}
    for service_id, runner, probed, count in counted:
        if service_id in probing and runners.probed_by_provisioner(runner) and not probed:
            continue
        counts[service_id] = counts.get(service_id, 0) + count
    return counts


async def messages(session: AsyncSession, rows: Sequence[ServiceRow]) -> list[resources_pb2.Service]:
    gateway_ids = {row.gateway_id for row in rows if row.gateway_id}
    by_id: dict[str, GatewayRow] = {}
    if gateway_ids:
        found = await session.execute(select(GatewayRow).where(GatewayRow.id.in_(gateway_ids)))
        by_id = {gw.id: gw for gw in found.scalars()}
    counts = await ready_counts(session, [row.id for row in rows])
    certificates = await _certificates(session, gateway_ids)
    result = []
    for row in rows:
        message = service_message(row, by_id.get(row.gateway_id or ""), counts.get(row.id, 0))
        if row.hostname and row.gateway_id:
            message.status.certificate = _certificate_state(
                certificates.get(row.gateway_id, []), row.hostname
            )
        result.append(message)
    return result


async def _certificates(session: AsyncSession, gateway_ids: set[str]) -> dict[str, list[TlsCertificateRow]]:
    if not gateway_ids:
        return {}
    found = await session.execute(
        select(TlsCertificateRow).where(TlsCertificateRow.gateway_id.in_(gateway_ids))
    )
    by_gateway: dict[str, list[TlsCertificateRow]] = {}
    for certificate in found.scalars():
        by_gateway.setdefault(certificate.gateway_id, []).append(certificate)
    return by_gateway


def _certificate_state(certificates: list[TlsCertificateRow], hostname: str) -> str:
    wildcard = "*." + hostname.split(".", 1)[-1]
    for certificate in certificates:
        names = json.loads(certificate.hostnames)
        if hostname in names or wildcard in names:
            return certificate.state + (f": {certificate.message}" if certificate.message else "")
    return ""


async def message(session: AsyncSession, row: ServiceRow) -> resources_pb2.Service:
    return (await messages(session, [row]))[0]


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


async def resolve_gateway(
    session: AsyncSession, principal: Principal, project: str, reference: str | bool | None
) -> GatewayRow | None:
    """The gateway a service's `gateway:` names (seed 004 allows its hostname or IP)."""
    if reference is False:
        return None
    if reference is None or reference is True:
        result = await session.execute(
            select(GatewayRow).where(GatewayRow.project_id == project, GatewayRow.is_default.is_(True))
        )
        row = result.scalar_one_or_none()
        if row is None:
            raise FailedPrecondition(
                f'project "{project}" has no default gateway: create one, or name one with `gateway:`'
            )
        return row
    owner, _, name = reference.rpartition("/")
    if owner:
        principal.require_project(owner)
        return await gateways.get(session, owner, name)
    row = await gateways.find(session, project, name)
    if row is not None:
        return row
    for candidate in await gateways.list_rows(session, project):
        if reference in (gateway_status(candidate).hostname, gateway_config(candidate).address):
            return candidate
    kind = "address" if _is_address(reference) else "name or hostname"
    raise NotFound(
        f'no gateway with the {kind} "{reference}" in project "{project}": see `gatehouse gateway list`'
    )


async def _holder(session: AsyncSession, row_id: str | None, **where: object) -> ServiceRow | None:
    query = select(ServiceRow).filter_by(**where)
    if row_id is not None:
        query = query.where(ServiceRow.id != row_id)
    return (await session.execute(query)).scalars().first()


def _held_by(holder: ServiceRow, project: str) -> str:
    return f'used by service "{holder.name}"' if holder.project_id == project else "taken"


async def _check_free(
    session: AsyncSession,
    gateway: GatewayRow,
    project: str,
    port: int | None,
    hostname: str | None,
    row_id: str | None,
) -> None:
    """The port rule. Another project's service is never named: only that the port or name is taken."""
    if port is not None:
        holder = await _holder(session, row_id, gateway_id=gateway.id, gateway_port=port)
        if holder is not None:
            raise AlreadyExists(
                f'port {port} of gateway "{gateway.name}" is {_held_by(holder, project)}: map another '
                f'gateway port (port: "{port + 1}:<app-port>"), use another gateway, or give it a domain'
            )
    if hostname is not None:
        holder = await _holder(session, row_id, gateway_id=gateway.id, hostname=hostname)
        if holder is not None:
            raise AlreadyExists(
                f'{hostname} is {_held_by(holder, project)} on gateway "{gateway.name}": '
                "choose another service name, or use another gateway"
            )


def _placement(config: ServiceConfig, name: str, gateway: GatewayRow | None) -> tuple[int | None, str | None]:
    """Port-mapping mode gives a gateway port; domain mode gives `<name>.<domain>`."""
    if gateway is None:
        return None, None
    domain = gateway_config(gateway).domain
    if domain and not config.maps_port:
        return None, f"{name}.{domain}"
    return config.ports[0], None


def _check_https(config: ServiceConfig, gateway: GatewayRow | None, hostname: str | None) -> None:
    if gateway is None or hostname is None:
        return
    certificate = gateway_config(gateway).certificate
    if config.https is True and certificate is None:
        raise InvalidArgument(
            f'`https: true` needs a certificate, and gateway "{gateway.name}" has `certificate: null`: '
            "set `https: false` or `https: auto`"
        )
    if config.https is False and certificate is not None and certificate.type == "acm":
        raise InvalidArgument(
            f'`https: false` is not possible: gateway "{gateway.name}" terminates TLS with an ACM certificate'
        )


async def replace_on_gateway(session: AsyncSession, gateway: GatewayRow) -> None:
    """After a gateway's domain changed in place, its services move to their new names (or ports)."""
    result = await session.execute(select(ServiceRow).where(ServiceRow.gateway_id == gateway.id))
    for row in result.scalars().all():
        config = service_config(row)
        port, hostname = _placement(config, row.name, gateway)
        if (row.gateway_port, row.hostname) == (port, hostname):
            continue
        await _check_free(session, gateway, row.project_id, port, hostname, row.id)
        row.gateway_port, row.hostname = port, hostname
        row.resource_version = await feed.next_revision(session)
        await session.flush()
        feed.record(session, row.resource_version, feed.PUT, await message(session, row))


async def find_by_source(session: AsyncSession, project: str, source: str) -> ServiceRow | None:
    if not source:
        return None
    result = await session.execute(
        select(ServiceRow).where(ServiceRow.project_id == project, ServiceRow.source == source)
    )
    return result.scalars().first()


async def resolve_target(
    session: AsyncSession, project: str, config: ServiceConfig, source: str
) -> ServiceRow | None:
    if config.name is not None:
        return await find(session, project, config.name)
    return await find_by_source(session, project, source)


def diff(current: ServiceConfig, desired: ServiceConfig) -> list[str]:
    before = current.model_dump(exclude={"name"})
    after = desired.model_dump(exclude={"name"})
    return [
        f"{key}: {before.get(key)!r} -> {value!r}" for key, value in after.items() if before.get(key) != value
    ]


async def admit(
    session: AsyncSession,
    principal: Principal,
    project: str,
    config: ServiceConfig,
    row: ServiceRow | None,
    reserved: ReservedPorts,
) -> tuple[GatewayRow | None, str, int | None, str | None]:
    """Every check `apply` makes before it writes: the gateway, its state, the port or hostname
    the service takes, https. The plan makes them too, so what apply would refuse is refused before
    anyone is asked to confirm it. Returns the gateway, name, gateway port and hostname."""
    gateway = await resolve_gateway(session, principal, project, config.gateway)
    if gateway is not None and gateway_status(gateway).state not in USABLE_GATEWAY_STATES:
        state = resources_pb2.GatewayState.Name(gateway_status(gateway).state).removeprefix("GATEWAY_STATE_")
        raise FailedPrecondition(f'gateway "{gateway.name}" is {state.lower()}: services cannot use it')
    if row is not None:
        name = row.name
    elif config.name is not None:
        name = config.name
    else:
        taken = (
            await session.execute(select(ServiceRow.name).where(ServiceRow.project_id == project))
        ).scalars()
        name = readable_name("", set(taken))
    port, hostname = _placement(config, name, gateway)
    _check_https(config, gateway, hostname)
    if gateway is not None:
        if port is not None:
            reserved.check(port, config.ports[1], gateway)
        await _check_free(session, gateway, project, port, hostname, row.id if row else None)
    return gateway, name, port, hostname


async def apply(
    session: AsyncSession,
    principal: Principal,
    project: str,
    config: ServiceConfig,
    source: str,
    expected_version: int,
    force: bool,
    reserved: ReservedPorts,
) -> ServiceRow:
    row = await resolve_target(session, project, config, source)
    if row is not None and expected_version and expected_version != row.resource_version and not force:
        raise FailedPrecondition(
            f'service "{row.name}" changed since the plan: look at the plan again, or pass --force'
        )
    gateway, name, port, hostname = await admit(session, principal, project, config, row, reserved)
    spec = config.model_copy(update={"name": name}).model_dump_json()
    unchanged = row is not None and row.spec == spec and row.gateway_id == (gateway.id if gateway else None)
    if unchanged and row is not None and (row.gateway_port, row.hostname) == (port, hostname):
        return row
    revision = await feed.next_revision(session)
    if row is None:
        row = ServiceRow(
            id=new_id("svc"),
            project_id=project,
            name=name,
            source=source,
            status=status_json(resources_pb2.ServiceStatus(state=resources_pb2.SERVICE_STATE_SUBMITTED)),
            generation=1,
        )
        session.add(row)
    else:
        row.generation += 1
    row.spec = spec
    row.gateway_id = gateway.id if gateway else None
    row.gateway_port = port
    row.hostname = hostname
    row.resource_version = revision
    await session.flush()
    feed.record(session, revision, feed.PUT, await message(session, row))
    return row


async def remove(session: AsyncSession, row: ServiceRow) -> resources_pb2.Service:
    """Deletes the service and its replicas now: its port or hostname is free at once."""
    last = await message(session, row)
    for key in await credentials.keys_of(session, row):
        await credentials.withdraw_key(session, key)
    result = await session.execute(select(ReplicaRow).where(ReplicaRow.service_id == row.id))
    for replica in result.scalars():
        revision = await feed.next_revision(session)
        feed.record(session, revision, feed.DELETE, replica_message(replica))
        await session.delete(replica)
    revision = await feed.next_revision(session)
    feed.record(session, revision, feed.DELETE, last)
    await session.delete(row)
    return last


async def set_status(session: AsyncSession, row: ServiceRow, status: resources_pb2.ServiceStatus) -> None:
    del status.urls[:]
    status.ready_replicas = 0
    status.gateway_name = ""
    status.certificate = ""
    status.desired_replicas = 0
    encoded = status_json(status)
    if encoded == row.status:
        return
    revision = await feed.next_revision(session)
    row.status = encoded
    row.resource_version = revision
    feed.record(session, revision, feed.PUT, await message(session, row))


async def decide_rollout(session: AsyncSession, row: ServiceRow, promote: bool) -> None:
    """`service promote|abort`: the runner sends every request to the canary's new version and stops
    the old one, or back to the old version and stops the new one."""
    status = service_status(row)
    rollout = status.rollout
    verb = "promote" if promote else "abort"
    if rollout.state == rollouts.PROGRESSING and (rollout.canary_weight or rollout.canary_header):
        raise FailedPrecondition(
            f'the canary of "{row.name}" is still starting ({rollout.message}): {verb} it once it serves'
        )
    if rollout.state != rollouts.CANARY:
        shown = f"its last rollout is {rollout.state}" if rollout.state else "it has had no rollout"
        raise FailedPrecondition(
            f'service "{row.name}" has no canary to {verb} ({shown}): '
            "a change to a service with `canary` starts one"
        )
    if rollout.generation != row.generation:
        raise FailedPrecondition(
            f'service "{row.name}" changed since its canary started: apply it again, then decide'
        )
    rollout.state = rollouts.PROMOTING if promote else rollouts.ABORTING
    await set_status(session, row, status)


async def scale(session: AsyncSession, row: ServiceRow, replicas: int) -> None:
    low, high = service_config(row).replica_range
    if low == high:
        raise FailedPrecondition(f'service "{row.name}" has a fixed replica count: it does not scale')
    replicas = max(low, min(high, replicas))
    if row.desired_replicas == replicas:
        return
    events.explain(session, "Scaled", f"{row.desired_replicas} -> {replicas} replicas")
    row.desired_replicas = replicas
    row.resource_version = await feed.next_revision(session)
    feed.record(session, row.resource_version, feed.PUT, await message(session, row))


def config_of(row: ServiceRow) -> ServiceConfig:
    return service_config(row)

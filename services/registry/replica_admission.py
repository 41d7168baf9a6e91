"""Who may register a replica of which service, and at which address.

Gatehouse's own runners call with the system token (the provisioner's local runner, the tunnel that
registers agents) and are trusted with the addresses they give. Users and their automation need the
project's admin role, a service without `commands` (those run their own replicas) and an address
the service's gateway allows (replica_addresses.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.addresses import Network
from services.common.auth import Principal
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.registry import replica_addresses
from services.registry.convert import gateway_config, gateway_status, service_config
from services.registry.host_networks import machine_networks
from services.registry.models import GatewayRow, ReplicaRow, ServiceRow
from services.registry.replica_addresses import AddressRules, Claim, Resolver, SystemResolver
from services.registry.replicas import GATEHOUSE_RUNNERS, LOCAL_RUNNER


def _require_not_gatehouses(row: ReplicaRow) -> None:
    if row.runner in GATEHOUSE_RUNNERS:
        raise PermissionDenied(
            f'replica "{row.id}" is run by Gatehouse ({row.runner} runner): only Gatehouse changes it'
        )


@dataclass(frozen=True)
class ReplicaAdmission:
    replica_subnet: Network
    resolver: Resolver = field(default_factory=SystemResolver)
    host_networks: Callable[[], frozenset[Network]] = machine_networks

    def require_registrar(self, principal: Principal, project: str, runner: str) -> None:
        principal.require_project(project)
        if principal.system:
            return
        if runner in GATEHOUSE_RUNNERS:
            raise PermissionDenied(f"runner {runner!r} is Gatehouse's own: name your runner otherwise")
        principal.require_runner(project)

    def require_keeper(self, principal: Principal, row: ReplicaRow) -> None:
        """Heart-beating and unregistering take what registering takes, and leave Gatehouse's own alone."""
        principal.require_project(row.project_id)
        if not principal.system:
            principal.require_runner(row.project_id)
            _require_not_gatehouses(row)

    async def claim(self, principal: Principal, address: str) -> Claim | None:
        """`address` resolved, before any transaction (resolving may take seconds); None for
        Gatehouse's own runners, whose addresses are checked for form only."""
        if principal.system:
            replica_addresses.split_host_port(address)
            return None
        return await replica_addresses.claim(address, self.resolver)

    async def admit(
        self, session: AsyncSession, service: ServiceRow, replica_id: str, runner: str, found: Claim | None
    ) -> None:
        """Inside the registering transaction, on the rows as they are now."""
        if runner != LOCAL_RUNNER and service_config(service).commands:
            raise FailedPrecondition(
                f'service "{service.name}" runs its own replicas (it has `commands`): '
                "register replicas only for services without `commands`"
            )
        if found is None:
            return
        existing = await session.get(ReplicaRow, replica_id)
        if existing is not None and existing.service_id == service.id:
            _require_not_gatehouses(existing)
        refusal = await self.refusal(session, service, found)
        if refusal is not None:
            raise InvalidArgument(refusal)

    async def refusal(self, session: AsyncSession, service: ServiceRow, found: Claim | None) -> str | None:
        """Why the service's gateway refuses `found` now (its rules may have changed since it was
        registered), or None."""
        if found is None:
            return None
        gateway = await session.get(GatewayRow, service.gateway_id) if service.gateway_id else None
        return self.rules(gateway).refusal(found)

    def rules(self, gateway: GatewayRow | None) -> AddressRules:
        server_host = self.host_networks()
        if gateway is None:
            return AddressRules("", frozenset(), server_host, self.replica_subnet)
        config, status = gateway_config(gateway), gateway_status(gateway)
        own = replica_addresses.ip_addresses(
            [config.address or "", status.hostname, status.listen_address, *status.addresses]
        )
        allowed = tuple(ipaddress.ip_network(network) for network in config.replica_networks)
        return AddressRules(gateway.name, own, server_host, self.replica_subnet, allowed)

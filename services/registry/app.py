"""The registry process: migrations, first-start bootstrap, and its servicers."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.addresses import Network
from services.common.crypto import Cipher, load_or_create_key
from services.common.db import BOOTSTRAP_LOCK, Database, hold_until_commit
from services.common.grpc_server import Registration
from services.common.internal_ca import InternalCA
from services.common.settings import Settings
from services.registry import control_plane
from services.registry.api.backends import BackendsServicer
from services.registry.api.certificates import TlsCertificatesServicer
from services.registry.api.configurations import ConfigurationsServicer
from services.registry.api.context import RegistryContext
from services.registry.api.control_plane import ControlPlaneServicer
from services.registry.api.events import EventsServicer
from services.registry.api.gateways import GatewaysServicer
from services.registry.api.identity import IdentityServicer
from services.registry.api.projects import ProjectsServicer, UsersServicer
from services.registry.api.replicas import ReplicasServicer
from services.registry.api.secrets import SecretsServicer
from services.registry.api.service_keys import ServiceKeysServicer
from services.registry.api.services import ServicesServicer
from services.registry.api.watch import WatchServicer
from services.registry.feed import Broadcaster
from services.registry.identity import BootstrapFiles, DatabaseAuthenticator, bootstrap
from services.registry.replica_admission import ReplicaAdmission
from services.registry.reserved_ports import ReservedPorts
from services.registry.sweeper import sweep_forever
from services.registry.write_notices import WriteNotices


def bootstrap_files(settings: Settings) -> BootstrapFiles:
    return BootstrapFiles(
        cli_config=settings.home / "config.yml", system_token=settings.server_dir / "system-token"
    )


def replica_subnet(settings: Settings) -> Network:
    try:
        return ipaddress.ip_network(settings.local_replica_subnet, strict=False)
    except ValueError:
        raise SystemExit(
            f"error: GATEHOUSE_LOCAL_REPLICA_SUBNET={settings.local_replica_subnet!r} is not a network"
        ) from None


@dataclass
class Registry:
    ctx: RegistryContext
    authenticator: DatabaseAuthenticator
    # Other copies' writes, heard (PostgreSQL).
    notices: WriteNotices

    @classmethod
    async def start(cls, settings: Settings) -> Registry:
        db = Database(settings.db_url)
        await db.migrate()
        cipher = Cipher(load_or_create_key(settings.server_dir / "encryption.key"))
        ctx = RegistryContext(
            db=db,
            cipher=cipher,
            broadcaster=Broadcaster(),
            watch_history=settings.watch_history,
            admission=ReplicaAdmission(replica_subnet(settings)),
            reserved_ports=ReservedPorts.from_settings(settings),
            backend_networks=settings.project_backend_networks,
        )
        db.after_commit.append(ctx.reads.after_write)
        authenticator = DatabaseAuthenticator(db)
        ctx.forget_principals = authenticator.forget

        def heard(projects: set[str | None] | None, identity: bool) -> None:
            ctx.reads.invalidate(projects)
            if identity:
                authenticator.forget()
            ctx.broadcaster.notify()

        notices = WriteNotices(db, heard)
        ctx.reads.fresh = notices.fresh
        return cls(ctx=ctx, authenticator=authenticator, notices=notices)

    def registrations(self) -> list[Registration]:
        services = registry_pb2.DESCRIPTOR.services_by_name
        pairs: list[tuple[str, object, Callable[[Any, grpc.aio.Server], None]]] = [
            (
                "Configurations",
                ConfigurationsServicer(self.ctx),
                registry_pb2_grpc.add_ConfigurationsServicer_to_server,
            ),
            ("Gateways", GatewaysServicer(self.ctx), registry_pb2_grpc.add_GatewaysServicer_to_server),
            ("Services", ServicesServicer(self.ctx), registry_pb2_grpc.add_ServicesServicer_to_server),
            ("Replicas", ReplicasServicer(self.ctx), registry_pb2_grpc.add_ReplicasServicer_to_server),
            ("Secrets", SecretsServicer(self.ctx), registry_pb2_grpc.add_SecretsServicer_to_server),
            ("Watch", WatchServicer(self.ctx), registry_pb2_grpc.add_WatchServicer_to_server),
            ("Identity", IdentityServicer(), registry_pb2_grpc.add_IdentityServicer_to_server),
            ("Projects", ProjectsServicer(self.ctx), registry_pb2_grpc.add_ProjectsServicer_to_server),
            ("Users", UsersServicer(self.ctx), registry_pb2_grpc.add_UsersServicer_to_server),
            (
                "ServiceKeys",
                ServiceKeysServicer(self.ctx),
                registry_pb2_grpc.add_ServiceKeysServicer_to_server,
            ),
            ("Backends", BackendsServicer(self.ctx), registry_pb2_grpc.add_BackendsServicer_to_server),
            ("Events", EventsServicer(self.ctx), registry_pb2_grpc.add_EventsServicer_to_server),
            (
                "TlsCertificates",
                TlsCertificatesServicer(self.ctx),
                registry_pb2_grpc.add_TlsCertificatesServicer_to_server,
            ),
            (
                "ControlPlane",
                ControlPlaneServicer(self.ctx),
                registry_pb2_grpc.add_ControlPlaneServicer_to_server,
            ),
        ]
        return [Registration(services[name].full_name, servicer, add) for name, servicer, add in pairs]

    async def bootstrap(self, settings: Settings, api_address: str) -> None:
        """Project `main`, the CLI config, the services' token and the internal CA, on first start."""
        await bootstrap(self.ctx.db, bootstrap_files(settings), api_address)
        async with self.ctx.db.write() as session:
            await hold_until_commit(session, BOOTSTRAP_LOCK)
            await control_plane.ensure_internal_ca(session, self.ctx.cipher, settings.server_dir / "ca")
        # A copy given another copy's database but not its key stops here, saying so.
        await self.internal_ca()

    async def internal_ca(self) -> InternalCA:
        async with self.ctx.read() as session:
            sealed = await control_plane.sealed_internal_ca(session)
        assert sealed is not None, "bootstrap makes the internal CA"
        return InternalCA.unsealed(*sealed, self.ctx.cipher)

    async def run(self, settings: Settings) -> None:
        """The registry's own background work."""
        await asyncio.gather(sweep_forever(self.ctx, settings.replica_ttl), self.notices.run())

    async def close(self) -> None:
        await self.ctx.db.close()

"""The provisioner process: backends, the local runner, the reconciler and its API."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from gatehouse.client.connection import Stubs
from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import provisioner_pb2, provisioner_pb2_grpc, registry_pb2, tunnel_pb2, tunnel_pb2_grpc
from services.common.grpc_server import Registration
from services.common.internal_ca import InternalCA
from services.common.settings import Settings
from services.provisioner.agent_certificates import AgentTunnelIssuer
from services.provisioner.api import ProvisionerServicer
from services.provisioner.backends.catalog import cloud_builders
from services.provisioner.backends.factory import BackendFactory
from services.provisioner.backends.local.gateway import LocalGatewayBackend
from services.provisioner.backends.local.network import replica_network
from services.provisioner.credentials import LayeredCredentials, RegistryCredentials, ServerConfigFile
from services.provisioner.hosts.plan import XdsEndpoint
from services.provisioner.hosts.startup import DEFAULT_REGISTRY_MIRROR, envoy_image
from services.provisioner.join import JoinSetup
from services.provisioner.reconciler import Provisioner, mapped_ports
from services.provisioner.runner import LocalRunner
from services.provisioner.tunnel import TunnelsServicer


def public_xds_endpoint(settings: Settings, xds_port: int) -> XdsEndpoint:
    """Where cloud gateway hosts reach gateway_xds: `GATEHOUSE_XDS_PUBLIC_ADDRESS` (host:port), else
    the xDS listen address."""
    host, _, port = settings.xds_public_address.rpartition(":")
    if host and port.isdigit():
        return XdsEndpoint(host.strip("[]"), int(port))
    return XdsEndpoint(settings.xds_host, xds_port)


def host_envoy(settings: Settings) -> tuple[str, str]:
    """The Envoy image every gateway host runs and the mirror VM hosts pull it through."""
    try:
        image = envoy_image(settings.envoy_image, settings.envoy_image_digest)
    except ValueError as error:
        raise SystemExit(f"error: GATEHOUSE_ENVOY_IMAGE / GATEHOUSE_ENVOY_IMAGE_DIGEST: {error}") from None
    mirror = settings.envoy_registry_mirror
    return image, DEFAULT_REGISTRY_MIRROR if mirror is None else mirror


def build_provisioner(
    settings: Settings,
    stubs: Stubs,
    xds_port: int,
    ca: InternalCA | None = None,
    join: JoinSetup | None = None,
) -> Provisioner:
    """With `ca`, gateway_xds requires mTLS: local Envoys get client certificates from it, cloud hosts
    exchange a join token (`join`) for one."""
    local = LocalGatewayBackend(
        root=settings.home / "gateways",
        xds_host=settings.xds_host,
        xds_port=xds_port,
        default_bind=settings.local_bind,
        http_port=settings.local_http_port,
        https_port=settings.local_https_port,
        ca=ca,
    )
    network = replica_network(settings.local_replica_network, settings.local_replica_subnet)
    runner = LocalRunner(settings.home / "replicas", network, settings.replica_ready_timeout)
    mirror = RegistryMirror()
    config = ServerConfigFile(settings.server_dir / "config.yml")

    async def resolve(project: str, backend: str) -> dict[str, Any] | None:
        try:
            found = await stubs.backends.Resolve(
                registry_pb2.ResolveBackendRequest(project=project, type=backend)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return json_format.MessageToDict(found.config)

    backends = BackendFactory(
        {"local": local},
        credentials=LayeredCredentials(RegistryCredentials(resolve), config),
        cloud=cloud_builders(
            public_xds_endpoint(settings, xds_port),
            lambda gateway_id: mapped_ports(mirror, gateway_id),
            join,
            *host_envoy(settings),
        ),
        credentials_help=f": add it with `gatehouse backend add --config FILE` or in {config.path}",
    )
    return Provisioner(
        stubs,
        backends,
        local,
        runner,
        mirror,
        host_deadline=settings.host_connect_timeout,
        drain=settings.replica_drain,
    )


def registrations(
    provisioner: Provisioner, stubs: Stubs, settings: Settings, ca: InternalCA | None = None
) -> list[Registration]:
    """With `ca`, agents that run an Envoy get its certificates and reach replicas over reverse tunnels."""
    name = provisioner_pb2.DESCRIPTOR.services_by_name["Provisioner"].full_name
    tunnels = tunnel_pb2.DESCRIPTOR.services_by_name["Tunnels"].full_name
    issuer = None
    if ca is not None:
        # The mirror's dict is replaced on each resync: looked up anew each time.
        issuer = AgentTunnelIssuer(
            ca, settings.agent_tunnel_port, lambda id: provisioner.mirror.gateways.get(id)
        )
    return [
        Registration(
            name, ProvisionerServicer(provisioner), provisioner_pb2_grpc.add_ProvisionerServicer_to_server
        ),
        Registration(
            tunnels,
            TunnelsServicer(stubs, settings.local_bind, issuer),
            tunnel_pb2_grpc.add_TunnelsServicer_to_server,
        ),
    ]

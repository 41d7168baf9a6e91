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
from services.provisioner.reconciler import Provisioner, host_ports
from services.provisioner.runner import LocalRunner
from services.provisioner.tunnel import TunnelsServicer


def _host_port(setting: str, address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(
            f"error: {setting}: {address.strip()!r} is not host:port "
            "(give one, or several separated by commas, e.g. xds-a.example.com:50052,xds-b.example.com:50052)"
        )
    return host.strip("[]"), int(port)


def _xds_endpoints(setting: str, value: str, listen: XdsEndpoint) -> XdsEndpoint:
    addresses = [item for item in value.split(",") if item.strip()]
    if not addresses:
        return listen
    (host, port), *others = (_host_port(setting, address) for address in addresses)
    return XdsEndpoint(host, port, tuple(others))


def public_xds_endpoint(settings: Settings, xds_port: int) -> XdsEndpoint:
    """Where cloud gateway hosts reach gateway_xds: `GATEHOUSE_XDS_PUBLIC_ADDRESS` (host:port, or
    several separated by commas: copies of gateway_xds), else the xDS listen address."""
    listen = XdsEndpoint(settings.xds_host, xds_port)
    return _xds_endpoints("GATEHOUSE_XDS_PUBLIC_ADDRESS", settings.xds_public_address, listen)


def local_xds_endpoint(settings: Settings, xds_port: int) -> XdsEndpoint:
    """Where local gateways' Envoys reach gateway_xds: `GATEHOUSE_LOCAL_XDS_ADDRESS`, else the xDS
    listen address."""
    listen = XdsEndpoint(settings.xds_host, xds_port)
    return _xds_endpoints("GATEHOUSE_LOCAL_XDS_ADDRESS", settings.local_xds_address, listen)


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
    local_xds = local_xds_endpoint(settings, xds_port)
    local = LocalGatewayBackend(
        root=settings.local_state_dir / "gateways",
        xds_host=local_xds.host,
        xds_port=local_xds.port,
        other_xds=local_xds.others,
        default_bind=settings.local_bind,
        http_port=settings.local_http_port,
        https_port=settings.local_https_port,
        ca=ca,
    )
    network = replica_network(settings.local_replica_network, settings.local_replica_subnet)
    runner = LocalRunner(settings.local_state_dir / "replicas", network, settings.replica_ready_timeout)
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

    projects_credentials = RegistryCredentials(resolve, settings.project_backend_networks)
    backends = BackendFactory(
        {"local": local},
        credentials=LayeredCredentials(projects_credentials, config),
        cloud=cloud_builders(
            public_xds_endpoint(settings, xds_port),
            lambda gateway_id: host_ports(mirror, gateway_id, settings.agent_tunnel_port),
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

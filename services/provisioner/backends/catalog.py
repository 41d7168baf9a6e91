"""The cloud backends this server can build, each importing its SDK only when first used."""

from __future__ import annotations

import ipaddress
import logging

from services.provisioner.backends.base import GatewayBackend
from services.provisioner.backends.cloud import CloudGatewayBackend, MappedPorts
from services.provisioner.backends.factory import CloudBuilder
from services.provisioner.credentials import (
    AWSBackendConfig,
    AzureBackendConfig,
    BackendConfig,
    GCPBackendConfig,
    KubernetesBackendConfig,
)
from services.provisioner.hosts.plan import XdsEndpoint
from services.provisioner.join import JoinSetup

log = logging.getLogger(__name__)


def _routable(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host != "localhost"
    return not (address.is_loopback or address.is_unspecified)


def cloud_builders(
    xds: XdsEndpoint, mapped_ports: MappedPorts, join: JoinSetup | None = None
) -> dict[str, CloudBuilder]:
    def build(config: BackendConfig) -> GatewayBackend:
        if not _routable(xds.host):
            log.warning(
                "%s gateway hosts are told to reach gateway_xds at %s:%d, which they cannot: "
                "set GATEHOUSE_XDS_PUBLIC_ADDRESS to an address they can reach",
                config.type,
                xds.host,
                xds.port,
            )
        if isinstance(config, AWSBackendConfig):
            from services.provisioner.backends.aws.driver import AwsDriver

            return CloudGatewayBackend("aws", AwsDriver(config), xds, mapped_ports, join)
        if isinstance(config, GCPBackendConfig):
            from services.provisioner.backends.gcp.driver import GcpDriver

            return CloudGatewayBackend("gcp", GcpDriver(config), xds, mapped_ports, join)
        if isinstance(config, AzureBackendConfig):
            from services.provisioner.backends.azure.driver import AzureDriver

            return CloudGatewayBackend("azure", AzureDriver(config), xds, mapped_ports, join)
        if isinstance(config, KubernetesBackendConfig):
            from services.provisioner.backends.kubernetes.driver import KubernetesDriver

            return CloudGatewayBackend("kubernetes", KubernetesDriver(config), xds, mapped_ports, join)
        raise AssertionError(config)

    return {name: build for name in ("aws", "gcp", "azure", "kubernetes")}

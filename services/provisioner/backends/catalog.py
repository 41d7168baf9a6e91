"""The cloud backends this server can build, each importing its SDK only when first used."""

from __future__ import annotations

import ipaddress
import logging

from services.provisioner.backends.base import GatewayBackend
from services.provisioner.backends.cloud import CloudGatewayBackend, HostDriver, MappedPorts
from services.provisioner.backends.factory import CloudBuilder
from services.provisioner.credentials import (
    AWSBackendConfig,
    AzureBackendConfig,
    BackendConfig,
    GCPBackendConfig,
    KubernetesBackendConfig,
)
from services.provisioner.hosts.plan import XdsEndpoint
from services.provisioner.hosts.startup import DEFAULT_REGISTRY_MIRROR, ENVOY_IMAGE
from services.provisioner.join import JoinSetup

log = logging.getLogger(__name__)


def _routable(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host != "localhost"
    return not (address.is_loopback or address.is_unspecified)


def cloud_builders(
    xds: XdsEndpoint,
    mapped_ports: MappedPorts,
    join: JoinSetup | None = None,
    envoy_image: str = ENVOY_IMAGE,
    registry_mirror: str = DEFAULT_REGISTRY_MIRROR,
) -> dict[str, CloudBuilder]:
    """`envoy_image` runs on every host, VM or pod; VM hosts pull through `registry_mirror`."""

    def backend(name: str, driver: HostDriver) -> GatewayBackend:
        return CloudGatewayBackend(name, driver, xds, mapped_ports, join, envoy_image, registry_mirror)

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

            return backend("aws", AwsDriver(config))
        if isinstance(config, GCPBackendConfig):
            from services.provisioner.backends.gcp.driver import GcpDriver

            return backend("gcp", GcpDriver(config))
        if isinstance(config, AzureBackendConfig):
            from services.provisioner.backends.azure.driver import AzureDriver

            return backend("azure", AzureDriver(config))
        if isinstance(config, KubernetesBackendConfig):
            from services.provisioner.backends.kubernetes.driver import KubernetesDriver

            return backend("kubernetes", KubernetesDriver(config))
        raise AssertionError(config)

    return {name: build for name in ("aws", "gcp", "azure", "kubernetes")}

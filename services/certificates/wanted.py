"""Which certificates the registry's state calls for. Pure: same mirror, same answer."""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import resources_pb2


@dataclass(frozen=True)
class WantedCertificate:
    project: str
    gateway_id: str
    hostnames: tuple[str, ...]
    # "lets-encrypt" or "acm".
    issuer: str
    # "http-01" or "dns-01" for ACME.
    solver: str = ""

    @property
    def key(self) -> str:
        return f"{self.gateway_id}|{','.join(self.hostnames)}"


def certificate_key(certificate: resources_pb2.TlsCertificate) -> str:
    return f"{certificate.gateway_id}|{','.join(sorted(certificate.hostnames))}"


def wanted_certificates(mirror: RegistryMirror, dns01: bool) -> dict[str, WantedCertificate]:
    """ACM: one check per gateway. ACME: one wildcard per gateway with DNS-01, else one certificate
    per https service through HTTP-01."""
    wanted: dict[str, WantedCertificate] = {}
    https_gateways: set[str] = set()
    for service in mirror.services.values():
        if service.spec.hostname and service.spec.https != "false":
            https_gateways.add(service.spec.gateway_id)
    gateway: resources_pb2.Gateway | None
    for gateway in mirror.gateways.values():
        if gateway.status.state == resources_pb2.GATEWAY_STATE_DELETING or not gateway.spec.domain:
            continue
        if not gateway.spec.HasField("certificate"):
            continue
        wildcard = (f"*.{gateway.spec.domain}",)
        if gateway.spec.certificate.type == "acm":
            item = WantedCertificate(gateway.project, gateway.id, wildcard, "acm")
        elif dns01 and gateway.id in https_gateways:
            item = WantedCertificate(gateway.project, gateway.id, wildcard, "lets-encrypt", "dns-01")
        else:
            continue
        wanted[item.key] = item
    if dns01:
        return wanted
    for service in mirror.services.values():
        gateway = mirror.gateways.get(service.spec.gateway_id)
        if gateway is None or not service.spec.hostname or service.spec.https == "false":
            continue
        if not gateway.spec.HasField("certificate") or gateway.spec.certificate.type != "lets-encrypt":
            continue
        if gateway.status.state == resources_pb2.GATEWAY_STATE_DELETING:
            continue
        item = WantedCertificate(
            service.project, gateway.id, (service.spec.hostname,), "lets-encrypt", "http-01"
        )
        wanted[item.key] = item
    return wanted

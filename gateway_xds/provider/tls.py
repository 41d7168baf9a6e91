"""Registry certificates → the TLS port of a gateway. Pure: the same certificates give the same port."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gatehouse.gateway_tls import LETS_ENCRYPT, terminates_tls
from gatehouse.v1 import resources_pb2
from gateway_xds.ir.tls import ServerCertificate, TLSPort, TLSSecret, covers

HTTPS_LISTENER = "https"


def secret_name(certificate_id: str) -> str:
    """One name per certificate for its whole life: a renewal replaces the Secret, not the listener."""
    return f"cert-{certificate_id}"


def servable(certificate: resources_pb2.TlsCertificate) -> bool:
    """Whether the certificate is one Envoy can serve (given its key): issued by ACME, with a chain."""
    return (
        certificate.state == "issued" and certificate.issuer == LETS_ENCRYPT and bool(certificate.chain_pem)
    )


@dataclass(frozen=True)
class ServedCertificate:
    """A certificate the gateway's Envoy serves, with the key that goes with its chain."""

    id: str
    hostnames: tuple[str, ...]
    not_after: int  # seconds since the epoch; the later one wins a name two certificates cover
    secret: TLSSecret


def server_certificates(served: Iterable[ServedCertificate]) -> tuple[ServerCertificate, ...]:
    """One filter chain per certificate, each name on one chain only (Envoy refuses two chains that
    match the same name): the certificate that lasts longest gets it."""
    claimed: set[str] = set()
    chains: list[ServerCertificate] = []
    for certificate in sorted(served, key=lambda c: (-c.not_after, c.id)):
        names = tuple(sorted({n.lower() for n in certificate.hostnames} - claimed))
        claimed.update(names)
        if names:
            chains.append(ServerCertificate(certificate.secret.name, names))
    return tuple(sorted(chains, key=lambda c: c.secret))


def tls_port(gateway: resources_pb2.Gateway, served: Iterable[ServedCertificate]) -> TLSPort | None:
    if not terminates_tls(gateway):
        return None
    return TLSPort(HTTPS_LISTENER, gateway.status.https_port, server_certificates(served))


def covered(served: Iterable[ServedCertificate], hostname: str) -> bool:
    return any(covers(name.lower(), hostname.lower()) for c in served for name in c.hostnames)

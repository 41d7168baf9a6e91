"""The certificates each gateway's Envoy serves, kept current from the watch feed, with their keys.

Private keys never travel on the feed. They are fetched from the registry (system token only) for
the certificates a gateway that ends TLS at Envoy serves, once per certificate version, checked
against the chain they go with (a mismatch keeps the last good pair serving), and never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gatehouse.client.connection import Stubs
from gatehouse.client.mirror import RegistryMirror
from gatehouse.gateway_tls import terminates_tls
from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.ir.tls import TLSPort, TLSSecret
from gateway_xds.provider.tls import ServedCertificate, secret_name, servable, tls_port

log = logging.getLogger(__name__)

# Key fetches in flight at once (a resync may need one per certificate).
CONCURRENT_FETCHES = 16


class KeySource(Protocol):
    async def private_key(self, certificate_id: str) -> str:
        """The PEM key of the certificate as stored now; raises grpc.aio.AioRpcError."""
        ...


class RegistryKeys:
    def __init__(self, stubs: Stubs) -> None:
        self._stubs = stubs

    async def private_key(self, certificate_id: str) -> str:
        request = registry_pb2.GetTlsKeyRequest(id=certificate_id)
        return str((await self._stubs.tls_certificates.GetKey(request, timeout=10)).private_key_pem)


@dataclass
class CertificateChanges:
    """What changed for one gateway: Secrets to put (or remove: None), and names a certificate now
    covers or no longer covers."""

    secrets: dict[str, TLSSecret | None] = field(default_factory=dict)
    hostnames: set[str] = field(default_factory=set)


class GatewayCertificates:
    def __init__(self, keys: KeySource | None) -> None:
        self._keys = keys
        # Certificate id -> (its resource version, the chain and key known to go together).
        self._verified: dict[str, tuple[int, TLSSecret]] = {}
        self._served: dict[str, dict[str, ServedCertificate]] = {}  # gateway -> id -> certificate
        self._gateway_of: dict[str, str] = {}  # certificate id -> gateway id
        self._ids_of: dict[str, set[str]] = {}  # gateway id -> certificate ids
        self._names: dict[str, Counter[str]] = {}  # gateway -> names its certificates cover
        self._tls_ports: dict[str, tuple[int, TLSPort | None]] = {}
        # Ids whose key could not be fetched; the provider tries them again.
        self.failed: set[str] = set()

    # -- keys --------------------------------------------------------------------------------------

    async def fetch_keys(self, mirror: RegistryMirror, certificate_ids: Iterable[str]) -> None:
        """Fetch the keys the given certificates lack at their current version."""
        wanted = [c for i in certificate_ids if (c := self._needs_key(mirror, i)) is not None]
        if not wanted or self._keys is None:
            return
        limit = asyncio.Semaphore(CONCURRENT_FETCHES)

        async def fetch(certificate: resources_pb2.TlsCertificate) -> None:
            async with limit:
                await self._fetch(certificate)

        await asyncio.gather(*(fetch(c) for c in wanted))

    def _needs_key(self, mirror: RegistryMirror, certificate_id: str) -> resources_pb2.TlsCertificate | None:
        certificate = mirror.certificates.get(certificate_id)
        if certificate is None or not self._serves(mirror, certificate):
            self._verified.pop(certificate_id, None)
            self.failed.discard(certificate_id)
            return None
        verified = self._verified.get(certificate_id)
        if verified is not None and verified[0] == certificate.resource_version:
            return None
        return certificate

    async def _fetch(self, certificate: resources_pb2.TlsCertificate) -> None:
        assert self._keys is not None
        names = ", ".join(certificate.hostnames)
        try:
            key = await self._keys.private_key(certificate.id)
        except grpc.aio.AioRpcError as error:
            log.warning("certificate %s (%s): key not fetched: %s", certificate.id, names, error.code().name)
            self.failed.add(certificate.id)
            return
        self.failed.discard(certificate.id)
        if not _pair(certificate.chain_pem, key):
            # The key was replaced after this chain was read: the next event brings the chain.
            log.info(
                "certificate %s (%s): key and chain differ; keeping the last good pair", certificate.id, names
            )
            return
        secret = TLSSecret(secret_name(certificate.id), certificate.chain_pem, key)
        self._verified[certificate.id] = (certificate.resource_version, secret)

    # -- what each gateway serves ------------------------------------------------------------------

    def ids_of(self, gateway_id: str) -> set[str]:
        return set(self._ids_of.get(gateway_id, ()))

    def known_ids(self) -> set[str]:
        return set(self._gateway_of)

    def update(self, mirror: RegistryMirror, certificate_ids: Iterable[str]) -> dict[str, CertificateChanges]:
        """Re-derive what the given certificates contribute; returns what changed, by gateway."""
        changes: dict[str, CertificateChanges] = {}
        for certificate_id in certificate_ids:
            before = self._forget(certificate_id)
            certificate = mirror.certificates.get(certificate_id)
            now = None
            if certificate is not None:
                self._gateway_of[certificate_id] = certificate.gateway_id
                self._ids_of.setdefault(certificate.gateway_id, set()).add(certificate_id)
                now = self._served_now(mirror, certificate)
                if now is not None:
                    self._serve(certificate.gateway_id, now)
            old_gateway, old = before if before is not None else (None, None)
            new_gateway = certificate.gateway_id if certificate is not None else None
            if (old_gateway, old) == (new_gateway, now):
                continue
            for gateway_id in {g for g in (old_gateway, new_gateway) if g is not None}:
                was = old if gateway_id == old_gateway else None
                becomes = now if gateway_id == new_gateway else None
                change = changes.setdefault(gateway_id, CertificateChanges())
                if was is not None:
                    change.secrets[was.secret.name] = None
                if becomes is not None:
                    change.secrets[becomes.secret.name] = becomes.secret
                # A renewal covers the same names: no route changes.
                change.hostnames.update(_names(was) ^ _names(becomes))
                self._tls_ports.pop(gateway_id, None)
        return changes

    def served(self, gateway_id: str) -> Mapping[str, ServedCertificate]:
        return self._served.get(gateway_id, {})

    def tls_port(self, gateway: resources_pb2.Gateway) -> TLSPort | None:
        """The gateway's TLS port: the same object until its certificates or its port change, so that
        comparing listeners costs nothing per service change."""
        port = gateway.status.https_port if terminates_tls(gateway) else 0
        cached = self._tls_ports.get(gateway.id)
        if cached is None or cached[0] != port:
            cached = self._tls_ports[gateway.id] = (port, tls_port(gateway, self.served(gateway.id).values()))
        return cached[1]

    def covers(self, gateway_id: str, hostname: str) -> bool:
        """Whether a served certificate is valid for `hostname` (exactly, or as `*.<parent>`)."""
        names = self._names.get(gateway_id)
        if not names:
            return False
        hostname = hostname.lower()
        return names[hostname] > 0 or names["*." + hostname.partition(".")[2]] > 0

    def _serve(self, gateway_id: str, certificate: ServedCertificate) -> None:
        self._served.setdefault(gateway_id, {})[certificate.id] = certificate
        self._names.setdefault(gateway_id, Counter()).update(h.lower() for h in certificate.hostnames)

    def _forget(self, certificate_id: str) -> tuple[str, ServedCertificate | None] | None:
        gateway_id = self._gateway_of.pop(certificate_id, None)
        if gateway_id is None:
            return None
        self._ids_of.get(gateway_id, set()).discard(certificate_id)
        served = self._served.get(gateway_id, {}).pop(certificate_id, None)
        if served is not None:
            self._names[gateway_id].subtract(h.lower() for h in served.hostnames)
        return gateway_id, served

    def _serves(self, mirror: RegistryMirror, certificate: resources_pb2.TlsCertificate) -> bool:
        gateway = mirror.gateways.get(certificate.gateway_id)
        return gateway is not None and terminates_tls(gateway) and servable(certificate)

    def _served_now(
        self, mirror: RegistryMirror, certificate: resources_pb2.TlsCertificate
    ) -> ServedCertificate | None:
        verified = self._verified.get(certificate.id)
        if verified is None or not self._serves(mirror, certificate):
            return None
        return ServedCertificate(
            id=certificate.id,
            hostnames=tuple(certificate.hostnames),
            not_after=certificate.not_after.seconds,
            secret=verified[1],
        )


def _names(certificate: ServedCertificate | None) -> set[str]:
    return {h.lower() for h in certificate.hostnames} if certificate is not None else set()


def _pair(chain_pem: str, key_pem: str) -> bool:
    """Whether the key is the private half of the chain's first certificate."""
    try:
        certificate = x509.load_pem_x509_certificate(chain_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except ValueError:
        return False
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(certificate.public_key().public_bytes(*public) == key.public_key().public_bytes(*public))

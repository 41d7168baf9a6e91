"""TLS at the gateway: certificates (sent over SDS), the TLS port of a listener, and the ACME HTTP-01
answers a virtual host gives on plain HTTP."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# ACME tokens are base64url (RFC 8555 §8.3); anything else could escape the path.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


@dataclass(frozen=True)
class TLSSecret:
    """A certificate chain and its private key, sent over SDS as the Secret `name`.

    The name stays the same when the certificate is renewed, so a renewal updates the secret in place:
    no listener changes, no connection is dropped.
    """

    name: str
    certificate_chain: str = field(repr=False)
    private_key: str = field(repr=False)


@dataclass(frozen=True)
class ServerCertificate:
    """One filter chain of a TLS port: connections whose SNI is one of `server_names` (exact names or
    `*.domain`) are served the certificate of secret `secret`."""

    secret: str
    server_names: tuple[str, ...]


@dataclass(frozen=True)
class TLSPort:
    """A listener's virtual hosts served over TLS on a second port (its own Listener resource, routed
    exactly like the plain listener)."""

    name: str
    port: int
    certificates: tuple[ServerCertificate, ...] = ()


@dataclass(frozen=True)
class AcmeChallenge:
    """`GET /.well-known/acme-challenge/<token>` answers `key_authorization` (HTTP-01)."""

    token: str
    key_authorization: str


def validate_secret(secret: TLSSecret) -> list[str]:
    where = f"secret {secret.name!r}"
    errors: list[str] = []
    if not secret.name:
        errors.append("secret name must not be empty")
    if "-----BEGIN" not in secret.certificate_chain:
        errors.append(f"{where}: the certificate chain is not PEM")
    if "-----BEGIN" not in secret.private_key:
        errors.append(f"{where}: the private key is not PEM")
    return errors


def validate_tls_port(where: str, tls: TLSPort) -> list[str]:
    errors: list[str] = []
    if not tls.name:
        errors.append(f"{where}: the TLS port needs a name")
    if not 1 <= tls.port <= 65535:
        errors.append(f"{where}: TLS port {tls.port} out of range 1-65535")
    seen: set[str] = set()
    for certificate in tls.certificates:
        if not certificate.secret:
            errors.append(f"{where}: a certificate without a secret name")
        if not certificate.server_names:
            errors.append(f"{where}: certificate {certificate.secret!r} has no server name")
        for name in certificate.server_names:
            if not valid_server_name(name):
                errors.append(f"{where}: certificate {certificate.secret!r}: invalid server name {name!r}")
            elif name in seen:
                errors.append(f"{where}: server name {name!r} is served by two certificates")
            seen.add(name)
    return errors


def validate_challenge(where: str, challenge: AcmeChallenge) -> list[str]:
    if not _TOKEN.fullmatch(challenge.token):
        return [f"{where}: invalid ACME token {challenge.token!r}"]
    if not challenge.key_authorization or any(c.isspace() for c in challenge.key_authorization):
        return [f"{where}: invalid key authorization for ACME token {challenge.token!r}"]
    return []


def valid_server_name(name: str) -> bool:
    """A lower-case DNS name, or `*.` followed by one (what SNI matching accepts)."""
    labels = name.removeprefix("*.").split(".")
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def covers(server_name: str, hostname: str) -> bool:
    """Whether a certificate for `server_name` is valid for `hostname` (a wildcard covers one label)."""
    if server_name.startswith("*."):
        label, _, parent = hostname.partition(".")
        return bool(label) and parent == server_name[2:]
    return server_name == hostname

"""Traffic policies of a virtual host: who may call it (auth), how often (rate limits), from where (CORS)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# How long a request to a service scaled to zero waits for its first replica before the 503.
WAKE_HOLD_SECONDS = 60.0
# `rps` down to one request a minute.
MIN_REQUESTS_PER_SECOND = 1 / 60


@dataclass(frozen=True)
class OpeningCredential:
    """A credential that opens a service: the sha256 of its bearer value (hex; the value itself never
    leaves the registry) and who it is (a rate limit's client)."""

    hash: str
    principal: str


@dataclass(frozen=True)
class Authorization:
    """Requests need one of `credentials`: checked by the gateway's Envoy itself, which holds their
    hashes, so a credential is checked with no control plane to ask."""

    project: str
    service_id: str
    credentials: tuple[OpeningCredential, ...] = ()


def validate_authorization(where: str, authorization: Authorization) -> list[str]:
    errors: list[str] = []
    if not authorization.service_id:
        errors.append(f"{where}: authorization needs the service's id")
    # Never the value itself in a message: it may be a credential sent by mistake.
    if not all(_is_sha256_hex(credential.hash) for credential in authorization.credentials):
        errors.append(f"{where}: a credential's hash is not a sha256 in hex (only hashes go to Envoy)")
    if not all(credential.principal for credential in authorization.credentials):
        errors.append(f"{where}: a credential names no principal")
    return errors


def _is_sha256_hex(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


@dataclass(frozen=True)
class ScaleFromZero:
    """The service has no ready replica but may scale from zero: the listener's wake server is told
    about each request, brings a replica up and holds the request (bounded) until this gateway's
    Envoys can route to it, instead of answering 503 at once."""

    project: str
    service_id: str


class RateLimitKey(StrEnum):
    IP_ADDRESS = "ip_address"
    HEADER = "header"


@dataclass(frozen=True)
class RateLimit:
    """Requests under `prefix` (the longest prefix wins), per client IP or per value of `header`:
    `burst + 1` at once, then `requests_per_second` sustained. Requests without the header share one
    allowance."""

    prefix: str
    requests_per_second: float
    burst: int = 0
    key: RateLimitKey = RateLimitKey.IP_ADDRESS
    header: str = ""
    # Counted by the listener's rate limit server for all of the gateway's Envoys, not by each.
    shared: bool = False


def validate_rate_limits(where: str, limits: tuple[RateLimit, ...]) -> list[str]:
    errors: list[str] = []
    seen: set[str] = set()
    for limit in limits:
        at = f"{where}: rate limit {limit.prefix!r}"
        if not limit.prefix.startswith("/"):
            errors.append(f"{at}: the prefix must start with /")
        if limit.prefix in seen:
            errors.append(f"{at}: the prefix appears twice")
        seen.add(limit.prefix)
        if limit.requests_per_second < MIN_REQUESTS_PER_SECOND - 1e-12:
            errors.append(f"{at}: at least one request a minute")
        if limit.burst < 0:
            errors.append(f"{at}: burst must not be negative")
        if (limit.key is RateLimitKey.HEADER) != bool(limit.header):
            errors.append(f"{at}: a header name goes with key 'header' only")
    return errors

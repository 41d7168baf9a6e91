"""Upstream side of the IR: backends and their endpoints."""

from dataclasses import dataclass

DEFAULT_CONNECT_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True)
class Backend:
    """One EDS cluster and its load assignment; no endpoints means every request gets 503."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS

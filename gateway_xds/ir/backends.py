"""Upstream side of the IR: backends and their endpoints."""

from dataclasses import dataclass

DEFAULT_CONNECT_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True)
class Backend:
    """One EDS cluster and its load assignment; no endpoints means every request gets 503.

    With `agent_name`, the replicas are behind NAT and reached over their agents' reverse tunnels
    instead (ir/agent_tunnels.py): the cluster takes the tunnels of the agents whose certificates
    carry that name, and has no endpoints of its own."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    connect_timeout_ms: int = DEFAULT_CONNECT_TIMEOUT_MS
    agent_name: str = ""

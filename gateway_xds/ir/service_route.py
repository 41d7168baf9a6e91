"""One service's share of a gateway's IR, the piece the provider derives per service."""

from __future__ import annotations

from dataclasses import dataclass

from gateway_xds.ir.backends import Backend
from gateway_xds.ir.routes import VirtualHost


@dataclass(frozen=True)
class ServiceRoute:
    """One service's share of a gateway: a virtual host on a listener, and its backend."""

    listener: str
    virtual_host: VirtualHost
    backend: Backend
    # A rollout's canary: the new version's replicas, apart (the virtual host's `canary` names it).
    canary: Backend | None = None

    @property
    def backends(self) -> tuple[Backend, ...]:
        return (self.backend,) if self.canary is None else (self.backend, self.canary)

"""What the provider hands the translator: the IR of one gateway that changed, piece by piece."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway_xds.ir.agent_tunnels import AgentTunnels
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.service_route import ServiceRoute
from gateway_xds.ir.tls import TLSSecret


@dataclass(frozen=True)
class GatewayChange:
    """A gateway's listeners and agent tunnels as they are now, and the services and certificates
    that changed (None: gone). `name` is the gateway's, for messages."""

    gateway_id: str
    name: str
    listeners: tuple[HTTPListener, ...] = ()
    agent_tunnels: AgentTunnels | None = None
    services: Mapping[str, ServiceRoute | None] = field(default_factory=dict)
    secrets: Mapping[str, TLSSecret | None] = field(default_factory=dict)

"""Replicas behind NAT: the gateway's listener for its agents' reverse tunnels, and its identity
towards them (gatehouse/agent_tunnels.py has the names both ends share)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gatehouse.agent_tunnels import TUNNEL_LISTENER
from gateway_xds.ir.tls import valid_server_name


@dataclass(frozen=True)
class AgentTunnels:
    """Agents dial `address:port` with a certificate of `trusted_ca` whose DNS name ends with
    `agent_suffix` (an agent of one of this gateway's services); the gateway answers, and later opens
    its own TLS session to the agent over the tunnel, with `certificate_chain`.

    The gateway's TLS ports take them too, beside the public traffic: there the server name
    `server_name` (with the tunnels' ALPN protocol) picks their filter chain."""

    address: str
    port: int
    agent_suffix: str
    server_name: str
    certificate_chain: str = field(repr=False)
    private_key: str = field(repr=False)
    trusted_ca: str = field(repr=False)
    name: str = TUNNEL_LISTENER


def validate_agent_tunnels(tunnels: AgentTunnels) -> list[str]:
    where = f"agent tunnels {tunnels.name!r}"
    errors: list[str] = []
    try:
        ipaddress.ip_address(tunnels.address)
    except ValueError:
        errors.append(f"{where}: {tunnels.address!r} is not an IP address")
    if not 1 <= tunnels.port <= 65535:
        errors.append(f"{where}: port {tunnels.port} out of range 1-65535")
    if not tunnels.agent_suffix.startswith("."):
        errors.append(f"{where}: the agents' name suffix must start with '.'")
    if not valid_server_name(tunnels.server_name) or tunnels.server_name.startswith("*."):
        errors.append(f"{where}: {tunnels.server_name!r} is not a server name (one lower-case DNS name)")
    for what, pem in (
        ("certificate chain", tunnels.certificate_chain),
        ("private key", tunnels.private_key),
        ("trusted CA", tunnels.trusted_ca),
    ):
        if "-----BEGIN" not in pem:
            errors.append(f"{where}: the {what} is not PEM")
    return errors

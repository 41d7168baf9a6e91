"""Where a gateway takes its agents' reverse tunnels, and with which identity (translate/agent_tunnels.py)."""

from __future__ import annotations

from typing import Protocol

from gatehouse.agent_tunnels import gateway_agent_suffix, tunnel_server_name
from gatehouse.v1 import resources_pb2
from gateway_xds.ir.agent_tunnels import AgentTunnels


class TunnelIdentity(Protocol):
    """The internal CA's side of the tunnels: a certificate per gateway (kept current by the
    implementation: this is asked at every publish) and the CA agents' certificates chain to."""

    port: int

    def certificate(self, gateway_id: str) -> tuple[str, str]:
        """(certificate chain, private key), PEM."""
        ...

    def trusted_ca(self) -> str: ...


def agent_tunnels(gateway: resources_pb2.Gateway, identity: TunnelIdentity | None) -> AgentTunnels | None:
    """The gateway's tunnel listener, once its host says where it listens; None without an identity."""
    address = gateway.status.listen_address
    if identity is None or not address or not gateway.status.http_port:
        return None
    chain, key = identity.certificate(gateway.id)
    return AgentTunnels(
        address=address,
        port=identity.port,
        agent_suffix=gateway_agent_suffix(gateway.id),
        server_name=tunnel_server_name(gateway.id),
        certificate_chain=chain,
        private_key=key,
        trusted_ca=identity.trusted_ca(),
    )

"""Whether a gateway's Envoy ends TLS itself, as every process decides it: gateway_xds gives such a
gateway an HTTPS listener, and agents' tunnels share that listener's port (gatehouse/agent_tunnels.py)."""

from __future__ import annotations

from gatehouse.v1 import resources_pb2

LETS_ENCRYPT = "lets-encrypt"


def terminates_tls(gateway: resources_pb2.Gateway) -> bool:
    """Whether the gateway's Envoy ends TLS itself: a domain, an ACME (Let's Encrypt) policy and a TLS
    port. With `certificate: acm` TLS ends at the AWS load balancer, which sends plain HTTP to :80."""
    return (
        bool(gateway.spec.domain)
        and gateway.spec.HasField("certificate")
        and gateway.spec.certificate.type == LETS_ENCRYPT
        and gateway.status.https_port > 0
    )

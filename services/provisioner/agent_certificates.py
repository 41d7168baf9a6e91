"""What an agent that runs an Envoy gets from the server: a certificate of the internal CA bound to its
service on that service's gateway (gatehouse/agent_tunnels.py), and where that gateway takes tunnels:
its HTTPS port when its Envoy ends TLS, else the port every gateway keeps for them.

The agent makes its key itself and sends a certificate request; a certificate it already runs with
is kept (same node id, so a reconnect changes nothing at either Envoy) while it is still for this
service on this gateway, for the same key, and at least a third of its lifetime from its end.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from gatehouse.agent_keys import certificate_node
from gatehouse.agent_tunnels import agent_name, tunnel_port
from gatehouse.v1 import resources_pb2, tunnel_pb2
from services.common.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.common.internal_ca import LEAF_VALIDITY, InternalCA

GatewayLookup = Callable[[str], resources_pb2.Gateway | None]
# The watch-fed view of gateways may lag the registry (a server just started, a gateway just made).
GATEWAY_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class AgentTunnelIssuer:
    ca: InternalCA
    # Where every gateway takes tunnels (settings.agent_tunnel_port); those with HTTPS take them there too.
    port: int
    gateways: GatewayLookup
    gateway_wait_seconds: float = GATEWAY_WAIT_SECONDS

    async def issue(
        self, service: resources_pb2.Service, hello: tunnel_pb2.TunnelHello
    ) -> tunnel_pb2.AgentTunnel:
        gateway_id = service.spec.gateway_id
        if not gateway_id:
            raise FailedPrecondition(f'service "{service.name}" has no gateway')
        gateway = await self._running(gateway_id)
        if gateway is None:
            # The agent tries again (its Envoy, if it has one, keeps serving meanwhile).
            raise Unavailable(f'the gateway of service "{service.name}" is not running yet')
        name = agent_name(service.id, gateway_id)
        certificate = hello.certificate
        if not self._keeps(certificate, hello.certificate_request, name):
            try:
                certificate = self.ca.sign_agent_request(hello.certificate_request, service.id, gateway_id)
            except ValueError as error:
                raise InvalidArgument(f"the agent's certificate request: {error}") from None
        host, port = self._endpoint(gateway)
        return tunnel_pb2.AgentTunnel(
            certificate=certificate,
            ca=self.ca.certificate_pem,
            gateway_id=gateway_id,
            host=host,
            port=port,
            agent_name=name,
            node=certificate_node(certificate),
        )

    def endpoint(self, gateway_id: str) -> tuple[str, int] | None:
        """Where the gateway takes tunnels now, (host, port); None while it is not running."""
        gateway = self.gateways(gateway_id)
        if gateway is None or not gateway.status.hostname:
            return None
        return self._endpoint(gateway)

    def _endpoint(self, gateway: resources_pb2.Gateway) -> tuple[str, int]:
        return gateway.status.hostname, tunnel_port(gateway, self.port)

    async def _running(self, gateway_id: str) -> resources_pb2.Gateway | None:
        deadline = time.monotonic() + self.gateway_wait_seconds
        while True:
            gateway = self.gateways(gateway_id)
            if gateway is not None and gateway.status.hostname:
                return gateway
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)

    def _keeps(self, certificate_pem: bytes, request_pem: bytes, name: str) -> bool:
        if not certificate_pem or not self.ca.issued(certificate_pem):
            return False
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
            request = x509.load_pem_x509_csr(request_pem)
            names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            return False
        left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        return (
            names.get_values_for_type(x509.DNSName) == [name]
            and certificate.public_key() == request.public_key()
            and left > LEAF_VALIDITY / 3
        )

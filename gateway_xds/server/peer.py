"""Who a caller is, from its TLS client certificate (mTLS): URI SAN `spiffe://gatehouse/gateway/<id>`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import grpc
from envoy.config.core.v3 import base_pb2

from gatehouse.gateway_identity import gateway_of_uri
from gateway_xds.server.watcher import NodeRejectedError, node_to_gateway


class PeerContext(Protocol):
    """What a call's context tells of its caller's TLS identity (grpc.aio.ServicerContext)."""

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...


def peer_gateway(context: PeerContext) -> str | None:
    """The gateway named by the caller's verified client certificate, None without one."""
    for uri in context.auth_context().get("peer_uri", ()):
        gateway = gateway_of_uri(uri.decode(errors="replace"))
        if gateway is not None:
            return gateway
    return None


class PeerCertificateAuthorizer:
    """A node may only ask for the resources of the gateway its certificate names."""

    async def authorize(self, context: grpc.aio.ServicerContext[Any, Any], node: base_pb2.Node) -> str:
        certified = peer_gateway(context)
        if certified is None:
            raise NodeRejectedError(
                grpc.StatusCode.UNAUTHENTICATED, "a client certificate naming a gateway is required"
            )
        gateway_id = node_to_gateway(node.id)
        if gateway_id != certified:
            raise NodeRejectedError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"node {node.id!r} is not of gateway {certified!r}, which the client certificate names",
            )
        return gateway_id

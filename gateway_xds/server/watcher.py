"""What the xDS server needs from the rest of the control plane: snapshots, and who a node is."""

from typing import Any, Protocol

import grpc
from envoy.config.core.v3 import base_pb2

from gatehouse.gateway_identity import gateway_of_node
from gateway_xds.cache.snapshot import Snapshot


class ConfigWatcher(Protocol):
    """The gateway snapshots the server serves (SnapshotCache implements it)."""

    def get(self, gateway_id: str) -> Snapshot | None: ...

    async def wait_for_change(self, gateway_id: str, after: Snapshot | None) -> Snapshot:
        """Return the gateway's snapshot as soon as it is not `after`."""
        ...


class NodeRejectedError(Exception):
    """The stream of this node must end with `code`."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NodeAuthorizer(Protocol):
    """Maps the node of a new stream to the gateway it serves, or raises NodeRejectedError."""

    async def authorize(self, context: grpc.aio.ServicerContext[Any, Any], node: base_pb2.Node) -> str: ...


def node_to_gateway(node_id: str) -> str:
    """`gateway/<gateway_id>/<host_index>` -> gateway_id; NodeRejectedError(INVALID_ARGUMENT) otherwise."""
    gateway = gateway_of_node(node_id)
    if gateway is None:
        raise NodeRejectedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"node id {node_id!r} is not of the form gateway/<gateway_id>/<host_index>",
        )
    return gateway


class NodeIdAuthorizer:
    """Trusts the node id as sent; the seam where a peer-certificate check will go."""

    async def authorize(self, context: grpc.aio.ServicerContext[Any, Any], node: base_pb2.Node) -> str:
        return node_to_gateway(node.id)

"""Who calls the services Envoys stream to outside ADS (access logs, runtime): the node a stream
names, which must be of the gateway the caller's client certificate names (over mTLS)."""

from __future__ import annotations

from typing import Any

import grpc

from gateway_xds.server.peer import peer_gateway
from gateway_xds.server.watcher import NodeRejectedError, node_to_gateway


async def node_gateway(node_id: str, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The gateway of `node_id`; the call is aborted when the id is not a gateway's node or not of the
    certified gateway."""
    try:
        gateway = node_to_gateway(node_id)
    except NodeRejectedError as error:
        await context.abort(error.code, error.message)
    certified = peer_gateway(context)
    if certified is not None and gateway != certified:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED, f"node {node_id!r} is not of gateway {certified!r}"
        )
    return gateway

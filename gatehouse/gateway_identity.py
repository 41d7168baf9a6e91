"""Who a gateway host is, as every process says it: its Envoy's node id (which gateway_xds parses
back) and the URI its client certificates name (which gateway_xds, the join endpoint and agents'
Envoys check)."""

from __future__ import annotations

import re

GATEWAY_URI_PREFIX = "spiffe://gatehouse/gateway/"
_NODE_ID = re.compile(r"gateway/(?P<gateway>[^/]+)/(?P<host>\d+)")


def node_id(gateway_id: str, host_index: int) -> str:
    return f"gateway/{gateway_id}/{host_index}"


def gateway_of_node(node: str) -> str | None:
    """`gateway/<gateway_id>/<host_index>` → the gateway id; None for anything else."""
    match = _NODE_ID.fullmatch(node)
    return None if match is None else match["gateway"]


def gateway_uri(gateway_id: str) -> str:
    return GATEWAY_URI_PREFIX + gateway_id


def gateway_of_uri(uri: str) -> str | None:
    """The gateway a certificate's URI SAN names, None for any other URI."""
    if uri.startswith(GATEWAY_URI_PREFIX) and len(uri) > len(GATEWAY_URI_PREFIX):
        return uri[len(GATEWAY_URI_PREFIX) :]
    return None

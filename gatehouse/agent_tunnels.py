"""Replicas behind NAT over Envoy reverse tunnels: the names both ends and the control plane agree on.

`gatehouse agent` runs an Envoy beside the replica that dials its gateway's Envoy (its HTTPS port, or
the `agent-tunnels` listener) and hands it those connections; the gateway's Envoy then uses them as
the upstream connections of the service's cluster. Every process that takes part reads its names here, once:

* an agent's certificate (the internal CA's) names the service it may serve and the gateway it may
  serve it on, as its one DNS SAN `<service id>.<gateway id>.agents.gatehouse`; that name is the
  reverse-tunnel cluster id the gateway's Envoy checks the agent's handshake against, and the name
  the gateway's cluster for the service asks for;
* the tunnel's node id is the certificate's serial number, as Envoy prints it (lower-case hex);
* where an agent dials: a gateway whose Envoy ends TLS itself takes tunnels on its HTTPS port, beside
  the public HTTPS traffic, so an agent needs only outbound HTTPS; its TLS server name (SNI) and
  ALPN protocol, which no browser sends, pick the tunnels' filter chain there. A gateway without
  HTTPS takes them on a port of their own (which every gateway keeps, for agents configured before
  it had HTTPS);
* the registry lists a tunnelled replica at `<node id>.tunnel.gatehouse.invalid:<port>`, a name
  that never resolves (RFC 6761 `.invalid`), so no user can register it and no Envoy can dial it:
  gateway_xds reads it as "this service is served through its agents' tunnels".
"""

from __future__ import annotations

import re

from gatehouse.gateway_tls import terminates_tls
from gatehouse.v1 import resources_pb2

AGENTS_DOMAIN = "agents.gatehouse"
TUNNEL_LISTENER = "agent-tunnels"
# The gateway port agents dial, on the gateway's address, when the gateway has no HTTPS port.
DEFAULT_TUNNEL_PORT = 8444
# The ALPN protocol id agents offer: on a shared HTTPS port, with the server name below, it selects
# the tunnels' filter chain, and no browser offers it.
TUNNEL_ALPN = "gatehouse-tunnel"
# Connections each agent keeps open to its gateway's Envoy. Envoy keeps a tunnel on the worker
# thread that accepted it, and the listener spreads them evenly over its workers (exact balance), so
# this many serve a gateway Envoy of up to this many workers; more cost a few idle sockets.
TUNNEL_CONNECTIONS = 8
TUNNEL_ADDRESS_SUFFIX = ".tunnel.gatehouse.invalid"

_NODE = re.compile(r"(?:[0-9a-f]{2}){1,20}")


def agent_name(service_id: str, gateway_id: str) -> str:
    """The DNS SAN of the certificates of the service's agents on that gateway, and their tunnels'
    cluster id."""
    return f"{service_id}.{gateway_id}.{AGENTS_DOMAIN}"


def gateway_agent_suffix(gateway_id: str) -> str:
    """Every agent name of the gateway ends so: its tunnel listener accepts only these."""
    return f".{gateway_id}.{AGENTS_DOMAIN}"


def tunnel_server_name(gateway_id: str) -> str:
    """The TLS server name agents send to the gateway: the parent of every agent name of the
    gateway, itself no agent's (one label short) nor a name any public CA certifies."""
    return gateway_agent_suffix(gateway_id).removeprefix(".")


def tunnel_port(gateway: resources_pb2.Gateway, dedicated_port: int) -> int:
    """The gateway port agents dial: its HTTPS port when its Envoy ends TLS (the port any network that
    lets HTTPS out lets agents out to), else the port kept for tunnels."""
    return gateway.status.https_port if terminates_tls(gateway) else dedicated_port


def node_id(serial_number: int) -> str:
    """A tunnel's node id: the certificate's serial as Envoy formats `%DOWNSTREAM_PEER_SERIAL%`, two
    lower-case hex digits a byte, leading zero bytes left out."""
    return serial_number.to_bytes((serial_number.bit_length() + 7) // 8, "big").hex()


def tunnel_address(node: str, port: int) -> str:
    """The registry's address for the replica an agent serves over tunnels of node `node`; `port` is
    the replica's own, for people reading `replica list`."""
    if not _NODE.fullmatch(node):
        raise ValueError(f"{node!r} is not a tunnel node id")
    return f"{node}{TUNNEL_ADDRESS_SUFFIX}:{port}"


def tunnel_node(address: str) -> str | None:
    """The node id of a tunnelled replica's address, None for any other address."""
    host, _, port = address.rpartition(":")
    node = host.removesuffix(TUNNEL_ADDRESS_SUFFIX)
    if node == host or not port.isdigit() or not _NODE.fullmatch(node):
        return None
    return node

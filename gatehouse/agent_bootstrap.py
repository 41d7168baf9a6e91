"""The Envoy `gatehouse agent` runs beside a replica behind NAT: it dials its gateway's Envoy and gives it
reverse tunnels, over which the gateway sends the service's requests, and passes them to the replica.

Its whole configuration is this bootstrap (no xDS): it needs nothing from the control plane once
started, so traffic keeps flowing while the control plane is away. The gateway's end is
gateway_xds/translate/agent_tunnels.py; the names both ends share are in agent_tunnels.py.

Two TLS sessions, both with the agent's certificate and both checking the gateway's (the internal
CA's, URI SAN `spiffe://gatehouse/gateway/<id>`): the tunnel's own, which carries the one-request
handshake, and, once the gateway uses the tunnel, the gateway's session over it, which the `tunnels`
listener ends. Requests arrive as HTTP/2 streams and go to the replica as HTTP/1.1.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from gatehouse.agent_tunnels import TUNNEL_ALPN, TUNNEL_CONNECTIONS, tunnel_server_name
from gatehouse.gateway_identity import gateway_uri

REVERSE_TUNNEL_INITIATOR = "envoy.bootstrap.reverse_tunnel.downstream_socket_interface"
_TYPES = "type.googleapis.com/envoy.extensions."
_INITIATOR_CONFIG = (
    "bootstrap.reverse_tunnel.downstream_socket_interface.v3.DownstreamReverseConnectionSocketInterface"
)
_HCM = "filters.network.http_connection_manager.v3.HttpConnectionManager"
ADMIN_SOCKET_MODE = 0o600


@dataclass(frozen=True)
class AgentEnvoy:
    """What the agent's Envoy is: which tunnels it opens (node, cluster and tenant ids, the gateway's
    tunnel address and identity), with which certificate, and where the replica is."""

    node: str
    agent_name: str
    project: str
    gateway_id: str
    gateway_host: str
    gateway_port: int
    target_host: str
    target_port: int
    certificate_file: str
    key_file: str
    ca_file: str
    admin_socket: str
    # Envoy's worker threads: each opens its share of the TUNNEL_CONNECTIONS tunnels.
    workers: int = 1

    @property
    def connections_per_worker(self) -> int:
        return -(-TUNNEL_CONNECTIONS // self.workers)


def render_agent_bootstrap(agent: AgentEnvoy) -> dict[str, Any]:
    return {
        "node": {"id": agent.node, "cluster": agent.agent_name},
        "admin": {"address": {"pipe": {"path": agent.admin_socket, "mode": ADMIN_SOCKET_MODE}}},
        "bootstrap_extensions": [
            {
                "name": REVERSE_TUNNEL_INITIATOR,
                "typed_config": {"@type": _TYPES + _INITIATOR_CONFIG, "stat_prefix": "tunnels"},
            }
        ],
        "static_resources": {
            "listeners": [_tunnels_listener(agent)],
            "clusters": [_gateway_cluster(agent), _replica_cluster(agent)],
        },
    }


def _tls_context(agent: AgentEnvoy) -> dict[str, Any]:
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificates": [
            {
                "certificate_chain": {"filename": agent.certificate_file},
                "private_key": {"filename": agent.key_file},
            }
        ],
        "validation_context": {
            "trusted_ca": {"filename": agent.ca_file},
            "match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": gateway_uri(agent.gateway_id)}}
            ],
        },
    }


def _tunnels_listener(agent: AgentEnvoy) -> dict[str, Any]:
    """Opens tunnels to the gateway (the `rc://` address; each worker its own) and serves what comes
    back."""
    ids = f"{agent.node}:{agent.agent_name}:{agent.project}"
    manager = {
        "@type": _TYPES + _HCM,
        "stat_prefix": "tunnels",
        "codec_type": "AUTO",
        # The gateway ends the request's life (its own timeouts); here nothing cuts it short.
        "stream_idle_timeout": "0s",
        "http2_protocol_options": {"allow_connect": True},
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "replica",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "replica", "timeout": "0s"}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _TYPES + "filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "name": "tunnels",
        "listener_filters_timeout": "0s",
        "address": {
            "socket_address": {
                "address": f"rc://{ids}@gateway:{agent.connections_per_worker}",
                "port_value": 0,
                "resolver_name": "envoy.resolvers.reverse_connection",
            }
        },
        "filter_chains": [
            {
                # The gateway's own TLS session over the tunnel: only the gateway may send requests.
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": _TYPES + "transport_sockets.tls.v3.DownstreamTlsContext",
                        "require_client_certificate": True,
                        "common_tls_context": _tls_context(agent),
                    },
                },
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
                ],
            }
        ],
    }


def _gateway_cluster(agent: AgentEnvoy) -> dict[str, Any]:
    """Where the tunnels go: the gateway's HTTPS port or its `agent-tunnels` listener, over TLS. The
    server name and ALPN protocol pick the tunnels' filter chain on an HTTPS port shared with the
    public (the `agent-tunnels` listener has that chain only, and ignores both)."""
    return {
        "name": "gateway",
        "type": _discovery(agent.gateway_host),
        "connect_timeout": "2s",
        "load_assignment": _one_endpoint("gateway", agent.gateway_host, agent.gateway_port),
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _TYPES + "transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": tunnel_server_name(agent.gateway_id),
                "common_tls_context": {**_tls_context(agent), "alpn_protocols": [TUNNEL_ALPN]},
            },
        },
    }


def _replica_cluster(agent: AgentEnvoy) -> dict[str, Any]:
    return {
        "name": "replica",
        "type": _discovery(agent.target_host),
        "connect_timeout": "2s",
        "load_assignment": _one_endpoint("replica", agent.target_host, agent.target_port),
    }


def _discovery(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "STRICT_DNS"
    return "STATIC"


def _one_endpoint(cluster: str, host: str, port: int) -> dict[str, Any]:
    address = {"socket_address": {"address": host, "port_value": port}}
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}

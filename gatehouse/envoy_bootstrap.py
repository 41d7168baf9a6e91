"""The Envoy bootstrap every gateway host starts with: its node identity and the way to gateway_xds.

Everything else reaches Envoy over ADS, so this file never changes while the gateway lives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gatehouse.access_logs import RUNTIME_LAYER
from gatehouse.gateway_identity import node_id
from gatehouse.gateway_resources import SERVICE_STATS_PREFIX, XDS_CLUSTER
from gatehouse.limits import GRPC_MESSAGE_BYTES
from gatehouse.metrics import LATENCY_BUCKETS_MS

# Incremental xDS: a change sends only the resources that changed (State-of-the-World, "GRPC",
# re-sends every cluster and listener on each change); gateway_xds serves both.
DELTA = "DELTA_GRPC"
STATE_OF_THE_WORLD = "GRPC"
MAX_DOWNSTREAM_CONNECTIONS = 50_000
DOWNSTREAM_CONNECTIONS_MONITOR = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)


@dataclass(frozen=True)
class XdsTls:
    """Files on the gateway host: its client certificate and key, and the CA that signed gateway_xds's."""

    certificate_file: str
    key_file: str
    ca_file: str
    server_name: str
    # A file-based SDS resource naming the certificate and key files (`sds_resource`): Envoy then
    # watches them and takes a renewed certificate without a restart. None: read once at start.
    sds_file: str | None = None


# Envoy's admin interface on every gateway host: a Unix socket only its owner may open, never a TCP
# port, so nothing that can be routed to (a replica address such as 127.0.0.1:<port>) reaches it.
ADMIN_SOCKET_DIR = "/run/gatehouse"
HOST_ADMIN_SOCKET = f"{ADMIN_SOCKET_DIR}/envoy-admin.sock"
ADMIN_SOCKET_MODE = 0o600


@dataclass(frozen=True)
class BootstrapParams:
    gateway_id: str
    host_index: int
    xds_host: str
    xds_port: int
    admin_socket: str = HOST_ADMIN_SOCKET
    # Further copies of gateway_xds (host, port): the ADS stream goes to any that answers, and to
    # another when its copy goes away.
    other_xds: tuple[tuple[str, int], ...] = ()
    # Test harnesses only: the admin interface on 127.0.0.1:<admin_port> instead of the socket.
    admin_port: int | None = None
    api_type: str = DELTA
    # None: plain text (only for control planes that do not require mTLS).
    tls: XdsTls | None = None


HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_TLS_CONTEXT = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
TLS_SECRET = "envoy.extensions.transport_sockets.tls.v3.Secret"
CLIENT_SECRET_NAME = "gatehouse_xds_client"


def _tls_certificate(tls: XdsTls) -> dict[str, Any]:
    return {
        "certificate_chain": {"filename": tls.certificate_file},
        "private_key": {"filename": tls.key_file},
    }


def sds_resource(tls: XdsTls) -> dict[str, Any]:
    """The content of `tls.sds_file`: the client certificate as an SDS secret made of file names.

    Envoy watches the files' directory, so replacing them (one rename) rotates the certificate.
    """
    secret = {"@type": f"type.googleapis.com/{TLS_SECRET}", "name": CLIENT_SECRET_NAME}
    return {"resources": [{**secret, "tls_certificate": _tls_certificate(tls)}]}


def _transport_socket(tls: XdsTls) -> dict[str, Any]:
    """mTLS to gateway_xds: present the gateway's certificate, accept only the CA's server name."""
    common: dict[str, Any] = {"alpn_protocols": ["h2"]}
    if tls.sds_file is None:
        common["tls_certificates"] = [_tls_certificate(tls)]
    else:
        source = {"path_config_source": {"path": tls.sds_file}, "resource_api_version": "V3"}
        common["tls_certificate_sds_secret_configs"] = [{"name": CLIENT_SECRET_NAME, "sds_config": source}]
    common["validation_context"] = {
        "trusted_ca": {"filename": tls.ca_file},
        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": tls.server_name}}],
    }
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": f"type.googleapis.com/{UPSTREAM_TLS_CONTEXT}",
            "sni": tls.server_name,
            "common_tls_context": common,
        },
    }


def _xds_cluster(params: BootstrapParams) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STRICT_DNS",
        "connect_timeout": "2s",
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": {"interval": "15s", "timeout": "5s"}}
                },
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                        for host, port in ((params.xds_host, params.xds_port), *params.other_xds)
                    ]
                }
            ],
        },
    }
    if params.tls is not None:
        cluster["transport_socket"] = _transport_socket(params.tls)
    return cluster


def _config_source() -> dict[str, Any]:
    return {"ads": {}, "resource_api_version": "V3"}


# Replicas behind NAT: the gateway takes its agents' reverse tunnels (gateway_xds/translate/agent_tunnels.py)
# and uses them as its services' upstream connections, which takes this extension in the bootstrap.
REVERSE_TUNNEL_ACCEPTOR = "envoy.bootstrap.reverse_tunnel.upstream_socket_interface"
REVERSE_TUNNEL_ACCEPTOR_CONFIG = (
    "envoy.extensions.bootstrap.reverse_tunnel.upstream_socket_interface.v3."
    "UpstreamReverseConnectionSocketInterface"
)


def reverse_tunnel_acceptor() -> dict[str, Any]:
    return {
        "name": REVERSE_TUNNEL_ACCEPTOR,
        "typed_config": {
            "@type": f"type.googleapis.com/{REVERSE_TUNNEL_ACCEPTOR_CONFIG}",
            "stat_prefix": "agent_tunnels",
        },
    }


def takes_agent_tunnels(bootstrap: dict[str, Any]) -> bool:
    """Whether an Envoy started on `bootstrap` can take agents' tunnels (an older one cannot)."""
    extensions = bootstrap.get("bootstrap_extensions", [])
    return any(extension.get("name") == REVERSE_TUNNEL_ACCEPTOR for extension in extensions)


OTLP_SINK = "envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig"
STATS_FLUSH_SECONDS = 2
# Of the ~130 stats Envoy keeps per cluster, those a service's cluster keeps: the autoscaler's
# demand (requests routed, requests that found no replica, requests in flight) and what an operator
# reads first (the metrics endpoint exports requests by class, latency and active connections).
SERVICE_CLUSTER_STATS = (
    "upstream_rq_total",
    "upstream_cx_none_healthy",
    "upstream_rq_active",
    "upstream_rq_[1-5]xx",
    "upstream_rq_time",
    "upstream_cx_active",
    "upstream_rq_timeout",
    "upstream_rq_retry",
    "upstream_cx_connect_fail",
    "membership_healthy",
    "membership_total",
    r"outlier_detection\.ejections_active",
)


def _names_not_starting_with(prefix: str) -> list[str]:
    """RE2 has no lookahead: a name not starting with `prefix` differs from it at some character, or
    is a proper prefix of it. One small pattern each keeps every regex under RE2's program size limit."""
    differs = [f"{re.escape(prefix[:i])}[^{re.escape(prefix[i])}].*" for i in range(len(prefix))]
    shorter = [re.escape(prefix[:i]) for i in range(1, len(prefix))]
    return differs + shorter


def _stats_config() -> dict[str, Any]:
    """Every stat except the per-service cluster ones not in SERVICE_CLUSTER_STATS. With 10,000
    services Envoy would otherwise hold 1.3 M stats and push them all to the sink at every flush, on
    the thread that also applies xDS updates."""
    cluster = re.escape(SERVICE_STATS_PREFIX) + r"[^.]+\."
    patterns = [cluster + stat for stat in SERVICE_CLUSTER_STATS] + _names_not_starting_with(
        SERVICE_STATS_PREFIX
    )
    matchers = [{"safe_regex": {"regex": pattern}} for pattern in patterns]
    latency = {"safe_regex": {"regex": cluster + "upstream_rq_time"}}
    return {
        "stats_matcher": {"inclusion_list": {"patterns": matchers}},
        # A service's latency histogram keeps the buckets a p50/p95/p99 needs, not Envoy's 19.
        "histogram_bucket_settings": [{"match": latency, "buckets": list(LATENCY_BUCKETS_MS)}],
    }


def _stats_sink(node: str) -> dict[str, Any]:
    """Envoy pushes its counters to gateway_xds (OTLP) for autoscaling, under their full names."""
    return {
        "name": "envoy.stat_sinks.open_telemetry",
        "typed_config": {
            "@type": f"type.googleapis.com/{OTLP_SINK}",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": XDS_CLUSTER},
                "initial_metadata": [{"key": "x-gatehouse-node", "value": node}],
            },
            "emit_tags_as_attributes": False,
            "use_tag_extracted_name": False,
        },
    }


# Envoy starts its clusters only once its runtime layers arrived (or this passed): gateway_xds answers
# at once, so this bounds the wait on a control plane that does not serve the layer.
RUNTIME_FETCH_TIMEOUT = "0.25s"


def _layered_runtime() -> dict[str, Any]:
    """The runtime values gateway_xds sets for this Envoy (the share of access logs), over their own
    stream (RTDS, State-of-the-World) rather than ADS, so they change without any other resource."""
    source = {
        "api_config_source": {
            "api_type": STATE_OF_THE_WORLD,
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
        },
        "resource_api_version": "V3",
        "initial_fetch_timeout": RUNTIME_FETCH_TIMEOUT,
    }
    return {"layers": [{"name": RUNTIME_LAYER, "rtds_layer": {"name": RUNTIME_LAYER, "rtds_config": source}}]}


def _admin_address(params: BootstrapParams) -> dict[str, Any]:
    if params.admin_port is not None:
        return {"socket_address": {"address": "127.0.0.1", "port_value": params.admin_port}}
    return {"pipe": {"path": params.admin_socket, "mode": ADMIN_SOCKET_MODE}}


def render_bootstrap(params: BootstrapParams) -> dict[str, Any]:
    node = node_id(params.gateway_id, params.host_index)
    return {
        "node": {"id": node, "cluster": params.gateway_id},
        "stats_sinks": [_stats_sink(node)],
        "stats_flush_interval": f"{STATS_FLUSH_SECONDS}s",
        "stats_config": _stats_config(),
        "admin": {"address": _admin_address(params)},
        "layered_runtime": _layered_runtime(),
        "bootstrap_extensions": [reverse_tunnel_acceptor()],
        "dynamic_resources": {
            "ads_config": {
                "api_type": params.api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            "max_receive_message_length": GRPC_MESSAGE_BYTES,
                            # Back within a second of the control plane's return (Envoy's default
                            # waits 0.5 s growing to 30 s), jittered by Envoy.
                            "retry_policy": {
                                "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}
                            },
                        }
                    }
                ],
            },
            "cds_config": _config_source(),
            "lds_config": _config_source(),
        },
        "static_resources": {"clusters": [_xds_cluster(params)]},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": f"type.googleapis.com/{DOWNSTREAM_CONNECTIONS_MONITOR}",
                        "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                    },
                }
            ]
        },
    }

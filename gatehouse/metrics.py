"""The Prometheus metrics Gatehouse exports: one place for their names, which the exporters and the
Grafana dashboard (examples/observability/grafana-dashboard.json) read.

Names are Prometheus families; a counter's samples end in `_total`, a histogram's in `_bucket`,
`_sum` and `_count`. Per-gateway and per-service series carry only labels taken from the registry
(project, gateway and service names, a fixed set of status classes), never anything a request or an
Envoy sends, so their number follows the number of gateways and services.
"""

from __future__ import annotations

DEFAULT_PORT = 9464
PORT_ENV = "GATEHOUSE_METRICS_PORT"
HOST_ENV = "GATEHOUSE_METRICS_HOST"
DEFAULT_HOST = "127.0.0.1"

# Every process.
GRPC_REQUESTS = "gatehouse_grpc_requests"  # counter {method, code}
GRPC_DURATION = "gatehouse_grpc_request_duration_seconds"  # histogram {method}
RECONCILES = "gatehouse_reconciles"  # counter {reconciler, result: ok | error}
RECONCILE_DURATION = "gatehouse_reconcile_duration_seconds"  # histogram {reconciler}
# The registry.
REGISTRY_REVISION = "gatehouse_registry_revision"  # gauge: the last revision the registry took
# gateway_xds, per gateway {project, gateway}.
XDS_CONNECTED_ENVOYS = "gatehouse_xds_connected_envoys"  # gauge
XDS_PUSHES = "gatehouse_xds_pushes"  # counter
XDS_NACKS = "gatehouse_xds_nacks"  # counter
XDS_PUSH_ACK_SECONDS = "gatehouse_xds_push_ack_seconds"  # histogram: snapshot published → Envoy's ACK
XDS_MIRROR_REVISION = "gatehouse_xds_registry_revision"  # gauge: the registry revision gateway_xds applied
# gauge {project, gateway}: the lowest share of successful requests the gateway's Envoys log (100: all)
ACCESS_LOG_SUCCESS_PERCENT = "gatehouse_access_log_success_percent"
AUTOSCALER_DECISIONS = "gatehouse_autoscaler_decisions"  # counter {project, service, direction}
# gateway_xds, per service {project, gateway, service}, from the Envoys' own counters.
SERVICE_REQUESTS = "gatehouse_service_requests"  # counter, + {code_class: 1xx … 5xx}
SERVICE_UNAUTHORIZED = "gatehouse_service_unauthorized"  # counter: answered 401 by the auth check
SERVICE_RATE_LIMITED = "gatehouse_service_rate_limited"  # counter: 429 by the control plane's checks
SERVICE_UPSTREAM_LATENCY = "gatehouse_service_upstream_latency_seconds"  # histogram
SERVICE_ACTIVE_CONNECTIONS = "gatehouse_service_active_connections"  # gauge: to the replicas
SERVICE_REPLICAS = "gatehouse_service_ready_replicas"  # gauge: replicas the gateway routes to
# The certificates service {project, gateway, hostname}.
CERTIFICATE_EXPIRY = "gatehouse_certificate_expiry_timestamp_seconds"  # gauge

CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Upstream latency buckets (milliseconds, as Envoy keeps them): what a p50/p95/p99 needs, not Envoy's
# default 19 buckets up to an hour.
LATENCY_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

COUNTERS = (
    GRPC_REQUESTS,
    RECONCILES,
    XDS_PUSHES,
    XDS_NACKS,
    AUTOSCALER_DECISIONS,
    SERVICE_REQUESTS,
    SERVICE_UNAUTHORIZED,
    SERVICE_RATE_LIMITED,
)
HISTOGRAMS = (GRPC_DURATION, RECONCILE_DURATION, XDS_PUSH_ACK_SECONDS, SERVICE_UPSTREAM_LATENCY)
GAUGES = (
    REGISTRY_REVISION,
    XDS_CONNECTED_ENVOYS,
    XDS_MIRROR_REVISION,
    ACCESS_LOG_SUCCESS_PERCENT,
    SERVICE_ACTIVE_CONNECTIONS,
    SERVICE_REPLICAS,
    CERTIFICATE_EXPIRY,
)


def sample_names() -> frozenset[str]:
    """Every sample name a scrape can hold (what a PromQL query may name)."""
    names = {f"{name}_total" for name in COUNTERS} | set(GAUGES)
    for name in HISTOGRAMS:
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return frozenset(names)

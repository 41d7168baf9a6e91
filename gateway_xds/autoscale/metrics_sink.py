"""Envoy's stats, pushed over OTLP (Envoy's OpenTelemetry stat sink) to gateway_xds: each Envoy
reports its cumulative per-cluster request counters and its requests-in-flight gauges every flush,
named `cluster.<name>.<stat>`. The autoscaler reads the demand; the metrics endpoint the requests by
class, latency and connections.

The bootstrap sends the node id as `x-gatehouse-node` metadata; reports without it are refused, and
so are reports whose node is not of the gateway the caller's client certificate names (mTLS).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Literal, NoReturn, Protocol

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.metrics.v1 import metrics_pb2

from gatehouse.gateway_resources import SERVICE_STATS_PREFIX
from gateway_xds.autoscale.concurrency import InFlight
from gateway_xds.autoscale.rates import RequestRates
from gateway_xds.observe.envoy_stats import (
    ACTIVE_CONNECTIONS,
    LATENCY,
    REQUEST_CLASSES,
    SERVICE_STATS,
    ClusterStats,
    EnvoyStats,
    Histogram,
)
from gateway_xds.server.peer import PeerContext, peer_gateway
from gateway_xds.server.watcher import NodeRejectedError, node_to_gateway
from gateway_xds.shared.redis import SharedStateUnavailable

NODE_HEADER = "x-gatehouse-node"


class ReportContext(PeerContext, Protocol):
    """What a report's call context offers the sink (grpc.aio.ServicerContext)."""

    def invocation_metadata(self) -> Iterable[tuple[str, str | bytes]] | None: ...

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn: ...


# Requests routed to the cluster, and those that found no replica to go to (scale from zero).
DEMAND_STATS = ("upstream_rq_total", "upstream_cx_none_healthy")
# Requests in flight to the cluster's replicas (a gauge).
IN_FLIGHT_STAT = "upstream_rq_active"


def _counter_value(metric: metrics_pb2.Metric, kind: Literal["sum", "gauge"] = "sum") -> float | None:
    """The metric's value summed over its data points: a counter (`sum`) or a gauge (`gauge`)."""
    data = getattr(metric, kind, None)
    if data is None or not metric.HasField(kind):
        return None
    total = 0.0
    for point in data.data_points:
        total += point.as_int if point.HasField("as_int") else point.as_double
    return total


def _gauge_value(metric: metrics_pb2.Metric) -> float | None:
    if not metric.HasField("gauge"):
        return None
    points = metric.gauge.data_points
    return sum(p.as_int if p.HasField("as_int") else p.as_double for p in points)


def _histogram(metric: metrics_pb2.Metric) -> Histogram | None:
    if not metric.HasField("histogram"):
        return None
    points = metric.histogram.data_points
    if len(points) != 1 or len(points[0].bucket_counts) != len(points[0].explicit_bounds) + 1:
        return None
    point = points[0]
    return Histogram(tuple(point.explicit_bounds), tuple(point.bucket_counts), point.sum)


def _read_stat(stats: ClusterStats, stat: str, metric: metrics_pb2.Metric) -> None:
    if stat in REQUEST_CLASSES:
        value = _counter_value(metric)
        if value is not None:
            stats.counters[stat] = value
    elif stat == ACTIVE_CONNECTIONS:
        gauge = _gauge_value(metric)
        if gauge is not None:
            stats.gauges[stat] = gauge
    elif stat == LATENCY:
        stats.latency = _histogram(metric)


def _scopes(resource: object) -> list[object]:
    """Field 2 of ResourceMetrics: `scope_metrics` in current OTLP, `instrumentation_library_metrics`
    in the older copy xds-protos also installs at the same import path (same wire number)."""
    groups = getattr(resource, "scope_metrics", None)
    if groups is None:
        groups = resource.instrumentation_library_metrics  # type: ignore[attr-defined]
    return list(groups)


class MetricsSink(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(
        self, rates: RequestRates, in_flight: InFlight | None = None, stats: EnvoyStats | None = None
    ) -> None:
        self._rates = rates
        self._in_flight = in_flight
        self._stats = stats

    async def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: ReportContext,
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        metadata = dict(context.invocation_metadata() or ())
        node = metadata.get(NODE_HEADER)
        if not node:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"reports need {NODE_HEADER} metadata")
        certified = peer_gateway(context)
        reported: str | None = None
        try:
            reported = node_to_gateway(str(node))
        except NodeRejectedError as error:
            if certified is not None:
                await context.abort(error.code, error.message)
        if certified is not None and reported != certified:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"node {node!r} is not of gateway {certified!r}"
            )
        now = time.monotonic()
        demand: dict[str, float] = {}
        active: dict[str, float] = {}
        clusters: dict[str, ClusterStats] = {}
        for resource in request.resource_metrics:
            for scope in _scopes(resource):
                for metric in scope.metrics:  # type: ignore[attr-defined]
                    if not metric.name.startswith(SERVICE_STATS_PREFIX):
                        continue
                    cluster, _, stat = metric.name[len("cluster.") :].rpartition(".")
                    if stat == IN_FLIGHT_STAT:
                        gauge = _counter_value(metric, "gauge")
                        if gauge is not None:
                            active[cluster] = active.get(cluster, 0.0) + gauge
                    if stat in DEMAND_STATS:
                        value = _counter_value(metric)
                        if value is not None:
                            demand[cluster] = demand.get(cluster, 0.0) + value
                    if self._stats is not None and stat in SERVICE_STATS:
                        _read_stat(clusters.setdefault(cluster, ClusterStats()), stat, metric)
        if self._in_flight is not None:
            for cluster, level in active.items():
                self._in_flight.record(str(node), cluster, now, level)
        if self._stats is not None and reported is not None:
            self._stats.record(str(node), reported, clusters)
        try:
            await self._rates.report(str(node), demand)
        except SharedStateUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the shared request counters are unavailable")
        return metrics_service_pb2.ExportMetricsServiceResponse()

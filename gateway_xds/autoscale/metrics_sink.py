"""Envoy's stats, pushed over OTLP (Envoy's OpenTelemetry stat sink) to gateway_xds: each Envoy
reports its cumulative per-cluster request counters and its requests-in-flight gauges every flush,
named `cluster.<name>.<stat>`.

The bootstrap sends the node id as `x-gatehouse-node` metadata; reports without it are refused, and
so are reports whose node is not of the gateway the caller's client certificate names (mTLS).
"""

from __future__ import annotations

import time

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

from gatehouse.gateway_resources import SERVICE_STATS_PREFIX
from gateway_xds.autoscale.concurrency import InFlight
from gateway_xds.autoscale.rates import RequestRates
from gateway_xds.server.peer import peer_gateway
from gateway_xds.server.watcher import NodeRejectedError, node_to_gateway

NODE_HEADER = "x-gatehouse-node"
# Requests routed to the cluster, and those that found no replica to go to (scale from zero).
DEMAND_STATS = ("upstream_rq_total", "upstream_cx_none_healthy")
# Requests in flight to the cluster's replicas (a gauge).
IN_FLIGHT_STAT = "upstream_rq_active"


def _counter_value(metric: object, kind: str = "sum") -> float | None:
    """The metric's value summed over its data points: a counter (`sum`) or a gauge (`gauge`)."""
    data = getattr(metric, kind, None)
    if data is None or not metric.HasField(kind):  # type: ignore[attr-defined]
        return None
    total = 0.0
    for point in data.data_points:
        total += point.as_int if point.HasField("as_int") else point.as_double
    return total


def _scopes(resource: object) -> list[object]:
    """Field 2 of ResourceMetrics: `scope_metrics` in current OTLP, `instrumentation_library_metrics`
    in the older copy xds-protos also installs at the same import path (same wire number)."""
    groups = getattr(resource, "scope_metrics", None)
    if groups is None:
        groups = resource.instrumentation_library_metrics  # type: ignore[attr-defined]
    return list(groups)


class MetricsSink(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, rates: RequestRates, in_flight: InFlight | None = None) -> None:
        self._rates = rates
        self._in_flight = in_flight

    async def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.aio.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        metadata = dict(context.invocation_metadata() or ())
        node = metadata.get(NODE_HEADER)
        if not node:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"reports need {NODE_HEADER} metadata")
        certified = peer_gateway(context)
        if certified is not None:
            try:
                reported = node_to_gateway(str(node))
            except NodeRejectedError as error:
                await context.abort(error.code, error.message)
            if reported != certified:
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, f"node {node!r} is not of gateway {certified!r}"
                )
        now = time.monotonic()
        demand: dict[str, float] = {}
        active: dict[str, float] = {}
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
                        continue
                    if stat not in DEMAND_STATS:
                        continue
                    value = _counter_value(metric)
                    if value is not None:
                        demand[cluster] = demand.get(cluster, 0.0) + value
        for cluster, total in demand.items():
            self._rates.record(str(node), cluster, now, total)
        if self._in_flight is not None:
            for cluster, level in active.items():
                self._in_flight.record(str(node), cluster, now, level)
        return metrics_service_pb2.ExportMetricsServiceResponse()

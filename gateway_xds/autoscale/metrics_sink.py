"""Envoy's stats, pushed over OTLP (Envoy's OpenTelemetry stat sink) to gateway_xds: each Envoy
reports its cumulative per-cluster request counters every flush, named `cluster.<name>.<stat>`.

The bootstrap sends the node id as `x-gatehouse-node` metadata; reports without it are refused, and
so are reports whose node is not of the gateway the caller's client certificate names (mTLS).
"""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

from gateway_xds.autoscale.rates import RequestRates
from gateway_xds.server.peer import peer_gateway
from gateway_xds.server.watcher import NodeRejectedError, node_to_gateway
from gateway_xds.shared.redis import SharedStateUnavailable

NODE_HEADER = "x-gatehouse-node"
CLUSTER_PREFIX = "cluster.svc_"
# Requests routed to the cluster, and those that found no replica to go to (scale from zero).
DEMAND_STATS = ("upstream_rq_total", "upstream_cx_none_healthy")


def _counter_value(metric: object) -> float | None:
    data = getattr(metric, "sum", None)
    if data is None or not metric.HasField("sum"):  # type: ignore[attr-defined]
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
    def __init__(self, rates: RequestRates) -> None:
        self._rates = rates

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
        demand: dict[str, float] = {}
        for resource in request.resource_metrics:
            for scope in _scopes(resource):
                for metric in scope.metrics:  # type: ignore[attr-defined]
                    if not metric.name.startswith(CLUSTER_PREFIX):
                        continue
                    cluster, _, stat = metric.name[len("cluster.") :].rpartition(".")
                    if stat not in DEMAND_STATS:
                        continue
                    value = _counter_value(metric)
                    if value is not None:
                        demand[cluster] = demand.get(cluster, 0.0) + value
        try:
            await self._rates.report(str(node), demand)
        except SharedStateUnavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the shared request counters are unavailable")
        return metrics_service_pb2.ExportMetricsServiceResponse()

"""Envoy's OTLP stat pushes, as its OpenTelemetry sink sends them to gateway_xds."""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2


def envoy_push(cluster_totals: dict[str, int]) -> metrics_service_pb2.ExportMetricsServiceRequest:
    """An Envoy's OTLP push of cumulative `upstream_rq_total` per cluster."""
    request = metrics_service_pb2.ExportMetricsServiceRequest()
    resource = request.resource_metrics.add()
    # The same field under its older name in the OTLP copy xds-protos installs (see metrics_sink.py).
    current = "scope_metrics" in resource.DESCRIPTOR.fields_by_name
    # The older field is not in opentelemetry-proto's stubs.
    scope = (resource.scope_metrics if current else resource.instrumentation_library_metrics).add()  # type: ignore[attr-defined]
    for cluster, total in cluster_totals.items():
        metric = scope.metrics.add(name=f"cluster.{cluster}.upstream_rq_total")
        metric.sum.CopyFrom(metrics_pb2.Sum(data_points=[metrics_pb2.NumberDataPoint(as_int=total)]))
    return request

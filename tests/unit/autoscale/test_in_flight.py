"""Requests in flight across gateway replicas, on a made-up clock, and the metrics sink that reads
them from Envoy's OTLP gauges next to its counters."""

from __future__ import annotations

import time
from typing import NoReturn

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from gateway_xds.autoscale.concurrency import InFlight
from gateway_xds.autoscale.decision import ScalingPolicy, wanted
from gateway_xds.autoscale.metrics_sink import MetricsSink
from gateway_xds.autoscale.rates import RequestRates


def test_each_envoys_samples_are_averaged_over_the_window_then_summed() -> None:
    in_flight = InFlight()
    for second, (first, second_host) in zip(range(0, 30, 2), [(2, 4), (4, 4), (6, 4)] * 5, strict=False):
        in_flight.record("gw/0", "svc", second, first)
        in_flight.record("gw/1", "svc", second, second_host)
    assert in_flight.level("svc", 28, 30) == pytest.approx(4 + 4)
    assert in_flight.level("other", 28, 30) == 0.0
    # Both stop reporting: their samples leave the window, and so does their load.
    assert in_flight.level("svc", 100, 30) == 0.0


@pytest.mark.parametrize(("load", "expected"), [(0, 1), (2, 1), (2.0000001, 1), (2.5, 2), (6, 3), (60, 4)])
def test_replicas_wanted_for_requests_in_flight(load: float, expected: int) -> None:
    policy = ScalingPolicy(minimum=1, maximum=4, target=2, scale_up_delay=0, scale_down_delay=0)
    assert wanted(policy, load) == expected


class _Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-gatehouse-node", "gateway/gw-1/0"),)

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise AssertionError(f"refused: {code.name}: {details}")


def _report(active: int, total: int) -> metrics_service_pb2.ExportMetricsServiceRequest:
    gauge = metrics_pb2.Metric(
        name="cluster.svc_p_app.upstream_rq_active",
        gauge=metrics_pb2.Gauge(data_points=[metrics_pb2.NumberDataPoint(as_int=active)]),
    )
    canary = metrics_pb2.Metric(
        name="cluster.svc_p_app_canary.upstream_rq_active",
        gauge=metrics_pb2.Gauge(data_points=[metrics_pb2.NumberDataPoint(as_int=1)]),
    )
    counter = metrics_pb2.Metric(
        name="cluster.svc_p_app.upstream_rq_total",
        sum=metrics_pb2.Sum(data_points=[metrics_pb2.NumberDataPoint(as_int=total)]),
    )
    resource = metrics_pb2.ResourceMetrics()
    # Field 2: `scope_metrics`, or `instrumentation_library_metrics` in the older copy of OTLP.
    groups = getattr(resource, "scope_metrics", None)
    if groups is None:
        groups = resource.instrumentation_library_metrics  # type: ignore[attr-defined]  # xds-protos' OTLP
    groups.add().metrics.extend([gauge, canary, counter])
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[resource])


async def test_the_sink_keeps_gauges_apart_from_counters() -> None:
    rates, in_flight = RequestRates(), InFlight()
    sink = MetricsSink(rates, in_flight)
    await sink.Export(_report(active=3, total=100), _Context())
    await sink.Export(_report(active=5, total=100), _Context())
    now = time.monotonic()
    assert in_flight.level("svc_p_app", now, 30) == pytest.approx(4.0)
    assert in_flight.level("svc_p_app_canary", now, 30) == pytest.approx(1.0)
    assert rates.rate("svc_p_app", now, 30) == 0.0  # a counter that did not grow

"""What `gatehouse service stats` makes of the counters gateway_xds reports: rates between reports,
5xx share, p50/p99 by interpolation within buckets, restarts left out, a bounded store."""

from __future__ import annotations

import pytest

from gatehouse.v1 import registry_pb2
from services.registry.service_stats import (
    MAX_SERVICES,
    ServiceStatsStore,
    point,
    quantile,
    render,
    sparkline,
)

BOUNDS = (10.0, 100.0, 1000.0)


def _counters(
    ok: float, errors: float, latency: tuple[float, ...], service: str = "s1"
) -> registry_pb2.ServiceCounters:
    return registry_pb2.ServiceCounters(
        service_id=service,
        requests_by_class=[0, ok, 0, 0, errors],
        latency_bounds_ms=BOUNDS,
        latency_counts=latency,
        ready_replicas=2,
    )


@pytest.mark.parametrize(
    ("q", "counts", "expected"),
    [
        (0.5, (10, 0, 0, 0), 5.0),
        (0.5, (0, 10, 0, 0), 55.0),
        (0.99, (50, 49, 1, 0), 100.0),
        (0.99, (0, 0, 0, 10), 1000.0),
        (0.5, (0, 0, 0, 0), None),
    ],
)
def test_quantile(q: float, counts: tuple[float, ...], expected: float | None) -> None:
    assert quantile(q, BOUNDS, counts) == expected


def test_an_interval_has_its_rate_error_share_and_latency() -> None:
    found = point((0.0, _counters(100, 0, (50, 50, 0, 0))), (10.0, _counters(290, 10, (150, 100, 0, 0))))
    assert found is not None
    assert found.rps == 20.0 and found.error_rate == 0.05
    assert found.p50_ms == 7.5 and 10 < found.p99_ms <= 100
    assert found.ready_replicas == 2


def test_a_counter_that_went_down_is_no_interval() -> None:
    assert point((0.0, _counters(100, 0, (1, 0, 0, 0))), (10.0, _counters(5, 0, (1, 0, 0, 0)))) is None


def test_the_store_keeps_recent_samples_of_a_bounded_number_of_services() -> None:
    now = [0.0]
    store = ServiceStatsStore(clock=lambda: now[0])
    for second in range(0, 100, 10):
        now[0] = float(second)
        store.add(_counters(second * 10, 0, (second, 0, 0, 0)))
    assert [p.rps for p in store.points("s1", 10)] == [10.0] * 9
    now[0] = 90.0 + 11 * 60
    assert store.points("s1", 10) == []
    for index in range(MAX_SERVICES + 1):
        store.add(_counters(1, 0, (1, 0, 0, 0), service=f"other-{index}"))
    assert store.points("s1", 15) == []


def test_the_chart() -> None:
    assert sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert sparkline([0, 0]) == "▁▁"
    found = point((0.0, _counters(0, 0, (0, 0, 0, 0))), (10.0, _counters(100, 0, (100, 0, 0, 0))))
    assert found is not None
    lines = render([found], 10)
    assert lines[0].startswith("now: 10.0 requests/s, 0.0% errors (5xx), p50 5 ms")
    assert "no traffic" in render([], 10)[0]

"""Each service's counters over the last minutes (gateway_xds reports them every few seconds), and
what `gatehouse service stats` shows of them: requests a second, error rate, p50/p99 latency and
replicas per interval, with a chart. Kept in memory, bounded: KEPT_SAMPLES per service, at most
MAX_SERVICES services (the least recently reported go first)."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from gatehouse.metrics import CODE_CLASSES
from gatehouse.v1 import registry_pb2

KEPT_SAMPLES = 120
MAX_SERVICES = 2_000
DEFAULT_MINUTES = 10
MAX_MINUTES = 15
BARS = "▁▂▃▄▅▆▇█"
SERVER_ERRORS = CODE_CLASSES.index("5xx")


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile of a histogram by linear interpolation within its bucket, as Prometheus's
    histogram_quantile; the top bound when it falls above every bound. None without values."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0.0
    lower = 0.0
    for bound, count in zip(bounds, counts, strict=False):
        if count and running + count >= rank:
            return lower + (bound - lower) * (rank - running) / count
        running += count
        lower = bound
    return float(bounds[-1]) if bounds else None


def point(
    older: tuple[float, registry_pb2.ServiceCounters], newer: tuple[float, registry_pb2.ServiceCounters]
) -> registry_pb2.ServiceStatsPoint | None:
    """The interval between two samples; None where a counter went down (an Envoy restarted)."""
    (t0, a), (t1, b) = older, newer
    seconds = t1 - t0
    deltas = [y - x for x, y in zip(a.requests_by_class, b.requests_by_class, strict=False)]
    if seconds <= 0 or any(delta < 0 for delta in deltas) or len(deltas) != len(CODE_CLASSES):
        return None
    answered = sum(deltas)
    result = registry_pb2.ServiceStatsPoint(
        rps=answered / seconds,
        error_rate=deltas[SERVER_ERRORS] / answered if answered else 0.0,
        ready_replicas=b.ready_replicas,
        active_connections=b.active_connections,
    )
    result.time.FromSeconds(int(t1))
    if list(a.latency_bounds_ms) == list(b.latency_bounds_ms) and b.latency_bounds_ms:
        latency = [y - x for x, y in zip(a.latency_counts, b.latency_counts, strict=False)]
        if all(delta >= 0 for delta in latency):
            result.p50_ms = quantile(0.5, b.latency_bounds_ms, latency) or 0.0
            result.p99_ms = quantile(0.99, b.latency_bounds_ms, latency) or 0.0
    return result


def sparkline(values: Sequence[float]) -> str:
    top = max(values, default=0.0)
    if top <= 0:
        return BARS[0] * len(values)
    return "".join(BARS[min(len(BARS) - 1, int(value / top * (len(BARS) - 1) + 0.5))] for value in values)


def render(points: Sequence[registry_pb2.ServiceStatsPoint], minutes: int) -> list[str]:
    if not points:
        return [f"no traffic counted in the last {minutes} minutes (the gateway's Envoys report every 10 s)"]
    last = points[-1]
    lines = [
        f"now: {last.rps:.1f} requests/s, {last.error_rate * 100:.1f}% errors (5xx), "
        f"p50 {last.p50_ms:.0f} ms, p99 {last.p99_ms:.0f} ms, {last.ready_replicas} replicas ready, "
        f"{last.active_connections:.0f} connections",
        f"last {minutes} minutes, one mark per report (every few seconds), oldest first:",
    ]
    series: list[tuple[str, list[float], str]] = [
        ("requests/s", [p.rps for p in points], "{:.1f}"),
        ("errors %", [p.error_rate * 100 for p in points], "{:.1f}"),
        ("p50 ms", [p.p50_ms for p in points], "{:.0f}"),
        ("p99 ms", [p.p99_ms for p in points], "{:.0f}"),
        ("replicas", [float(p.ready_replicas) for p in points], "{:.0f}"),
    ]
    for name, values, number in series:
        lines.append(f"  {name:<11} {sparkline(values)}  max {number.format(max(values))}")
    return lines


class ServiceStatsStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._samples: OrderedDict[str, deque[tuple[float, registry_pb2.ServiceCounters]]] = OrderedDict()

    def add(self, sample: registry_pb2.ServiceCounters) -> None:
        kept = self._samples.get(sample.service_id)
        if kept is None:
            kept = self._samples[sample.service_id] = deque(maxlen=KEPT_SAMPLES)
            while len(self._samples) > MAX_SERVICES:
                self._samples.popitem(last=False)
        self._samples.move_to_end(sample.service_id)
        kept.append((self._clock(), sample))

    def points(self, service_id: str, minutes: int) -> list[registry_pb2.ServiceStatsPoint]:
        since = self._clock() - minutes * 60
        samples = [s for s in self._samples.get(service_id, ()) if s[0] >= since]
        found = (point(a, b) for a, b in itertools.pairwise(samples))
        return [p for p in found if p is not None]

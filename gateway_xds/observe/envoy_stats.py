"""The last per-service counters each Envoy pushed (OTLP, every flush), for the metrics endpoint.

Only the stats of service clusters (`cluster.svc_…`) named in SERVICE_STATS are kept, each Envoy's
last values only, so memory follows services times Envoys whatever an Envoy sends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from gatehouse.metrics import CODE_CLASSES

REQUEST_CLASSES = {f"upstream_rq_{code_class}": code_class for code_class in CODE_CLASSES}
ACTIVE_CONNECTIONS = "upstream_cx_active"
LATENCY = "upstream_rq_time"
SERVICE_STATS = (*REQUEST_CLASSES, ACTIVE_CONNECTIONS, LATENCY)
# An Envoy that stopped reporting (gone, or its host replaced) leaves after this long.
STALE_SECONDS = 300.0
# A guard against an Envoy that reports clusters it was never given.
MAX_CLUSTERS_PER_NODE = 20_000


@dataclass
class Histogram:
    bounds: tuple[float, ...]  # upper bounds, in Envoy's unit (milliseconds)
    counts: tuple[int, ...]  # per bucket, one more than bounds (the last: above every bound)
    total: float  # sum of the values

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass
class ClusterStats:
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    latency: Histogram | None = None


@dataclass
class _NodeReport:
    gateway_id: str
    at: float
    clusters: dict[str, ClusterStats]


class EnvoyStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._nodes: dict[str, _NodeReport] = {}
        self._clock = clock

    def record(self, node: str, gateway_id: str, clusters: dict[str, ClusterStats]) -> None:
        """One Envoy's report: its values replace the last ones (they are cumulative)."""
        if len(clusters) > MAX_CLUSTERS_PER_NODE:
            clusters = dict(list(clusters.items())[:MAX_CLUSTERS_PER_NODE])
        report = self._nodes.get(node)
        if report is None or report.gateway_id != gateway_id:
            self._nodes[node] = _NodeReport(gateway_id, self._clock(), dict(clusters))
            return
        report.at = self._clock()
        # Envoy pushes only the stats that changed since the last flush; the others keep their value.
        for name, stats in clusters.items():
            kept = report.clusters.setdefault(name, ClusterStats())
            kept.counters.update(stats.counters)
            kept.gauges.update(stats.gauges)
            if stats.latency is not None:
                kept.latency = stats.latency

    def of_gateway(self, gateway_id: str) -> Iterator[dict[str, ClusterStats]]:
        """The clusters reported by each current Envoy of the gateway."""
        now = self._clock()
        for node in [n for n, r in self._nodes.items() if now - r.at > STALE_SECONDS]:
            del self._nodes[node]
        for report in self._nodes.values():
            if report.gateway_id == gateway_id:
                yield report.clusters

    def gateway_ids(self) -> set[str]:
        return {report.gateway_id for report in self._nodes.values()}


@dataclass(frozen=True)
class ServiceTotals:
    """A service's counters summed over its gateway's current Envoys."""

    requests: dict[str, float]  # code class (1xx … 5xx) -> requests
    latency: Histogram | None  # milliseconds
    active_connections: float
    envoys: int  # how many Envoys reported the service


def merge_histograms(histograms: Iterable[Histogram]) -> Histogram | None:
    """The sum of histograms with the same bounds (one per Envoy); others are left out."""
    merged: Histogram | None = None
    for histogram in histograms:
        if merged is None:
            merged = Histogram(histogram.bounds, tuple(histogram.counts), histogram.total)
        elif histogram.bounds == merged.bounds:
            counts = tuple(a + b for a, b in zip(merged.counts, histogram.counts, strict=True))
            merged = Histogram(merged.bounds, counts, merged.total + histogram.total)
    return merged


def service_totals(reports: Iterable[dict[str, ClusterStats]], backend: str) -> ServiceTotals:
    """`reports`: each Envoy's clusters (EnvoyStats.of_gateway of the service's gateway)."""
    reported = [clusters[backend] for clusters in reports if backend in clusters]
    requests = {
        code_class: sum(stats.counters.get(stat, 0.0) for stats in reported)
        for stat, code_class in REQUEST_CLASSES.items()
    }
    latency = merge_histograms(stats.latency for stats in reported if stats.latency is not None)
    active = sum(stats.gauges.get(ACTIVE_CONNECTIONS, 0.0) for stats in reported)
    return ServiceTotals(requests, latency, active, len(reported))

"""gateway_xds's series for Prometheus, made at each scrape from what it holds: per gateway (its
Envoys, pushes, NACKs, ACK latency) and per service (the Envoys' counters, the control plane's own
401s and 429s). Labels are the registry's names of gateways and services it knows now, so a deleted
service's series leave with it and nothing an Envoy reports adds a label value."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from gatehouse import metrics
from gatehouse.client.mirror import RegistryMirror
from gatehouse.gateway_identity import gateway_of_node
from gateway_xds.observe.envoy_stats import ClusterStats, EnvoyStats, service_totals
from gateway_xds.observe.log_sampling import LogSampling
from gateway_xds.observe.responses import AnsweredRequests
from gateway_xds.observe.xds import GatewayXds, XdsObserver
from gateway_xds.provider.build import backend_name
from gateway_xds.server.stats import ServerStats

GATEWAY_LABELS = ["project", "gateway"]
SERVICE_LABELS = ["project", "gateway", "service"]


def _buckets(bounds: Iterable[float], counts: Iterable[int], scale: float = 1.0) -> list[tuple[str, float]]:
    """Per-bucket counts → Prometheus's cumulative `le` buckets (bounds multiplied by `scale`)."""
    out: list[tuple[str, float]] = []
    running = 0
    counts = list(counts)
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        out.append((repr(float(bound) * scale), running))
    running += sum(counts[len(out) :])
    out.append(("+Inf", running))
    return out


class XdsCollector:
    def __init__(
        self,
        mirror: RegistryMirror,
        envoy_stats: EnvoyStats,
        observer: XdsObserver,
        server_stats: ServerStats,
        answered: AnsweredRequests,
        decisions: Counter[tuple[str, str]],
        sampling: LogSampling | None = None,
    ) -> None:
        self._mirror = mirror
        self._envoy_stats = envoy_stats
        self._observer = observer
        self._server_stats = server_stats
        self._answered = answered
        self._decisions = decisions
        self._sampling = sampling

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._gateway_metrics()
        yield from self._service_metrics()
        revision = GaugeMetricFamily(metrics.XDS_MIRROR_REVISION, "The registry revision gateway_xds applied")
        revision.add_metric([], self._mirror.revision)
        yield revision

    def _gateway_metrics(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            metrics.XDS_CONNECTED_ENVOYS,
            "Envoys of the gateway connected to gateway_xds",
            labels=GATEWAY_LABELS,
        )
        pushes = CounterMetricFamily(
            metrics.XDS_PUSHES, "xDS pushes to the gateway's Envoys", labels=GATEWAY_LABELS
        )
        nacks = CounterMetricFamily(
            metrics.XDS_NACKS, "Configurations the gateway's Envoys refused", labels=GATEWAY_LABELS
        )
        latency = HistogramMetricFamily(
            metrics.XDS_PUSH_ACK_SECONDS,
            "From a snapshot's publication to an Envoy's ACK of it",
            labels=GATEWAY_LABELS,
        )
        logged = GaugeMetricFamily(
            metrics.ACCESS_LOG_SUCCESS_PERCENT,
            "The lowest share of successful requests the gateway's Envoys log (sampled under load; "
            "errors are all logged)",
            labels=GATEWAY_LABELS,
        )
        lowest: dict[str, float] = {}
        if self._sampling is not None:
            for node, percent in self._sampling.shares().items():
                gateway_id = gateway_of_node(node) or ""
                lowest[gateway_id] = min(percent, lowest.get(gateway_id, percent))
        pushed: dict[str, int] = {}
        for stream in self._server_stats.streams.values():
            pushed[stream.gateway_id] = pushed.get(stream.gateway_id, 0) + stream.counters.pushes
        for gateway_id in list(self._observer.gateways):
            if gateway_id not in self._mirror.gateways:
                self._observer.forget(gateway_id)
        for gateway in self._mirror.gateways.values():
            labels = [gateway.project, gateway.name]
            seen = self._observer.gateways.get(gateway.id, GatewayXds())
            connected.add_metric(labels, len(seen.connected))
            pushes.add_metric(labels, pushed.get(gateway.id, 0))
            nacks.add_metric(labels, seen.nacks)
            ack = seen.ack_latency
            latency.add_metric(labels, _buckets(ack.bounds, ack.counts), ack.total)
            if self._sampling is not None:
                logged.add_metric(labels, lowest.get(gateway.id, self._sampling.cap))
        yield from (connected, pushes, nacks, latency, logged)

    def _service_metrics(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            metrics.SERVICE_REQUESTS,
            "Requests the gateway's Envoys passed to the service's replicas, by response class",
            labels=[*SERVICE_LABELS, "code_class"],
        )
        unauthorized = CounterMetricFamily(
            metrics.SERVICE_UNAUTHORIZED,
            "Requests the gateway answered 401 (no valid credential), from its access logs",
            labels=SERVICE_LABELS,
        )
        limited = CounterMetricFamily(
            metrics.SERVICE_RATE_LIMITED,
            "Requests the gateway answered 429 (rate limits, failed-attempt limits), from its access logs",
            labels=SERVICE_LABELS,
        )
        latency = HistogramMetricFamily(
            metrics.SERVICE_UPSTREAM_LATENCY,
            "Time from the request's first byte sent to the replica to the response's last byte",
            labels=SERVICE_LABELS,
        )
        active = GaugeMetricFamily(
            metrics.SERVICE_ACTIVE_CONNECTIONS,
            "Open connections to the service's replicas",
            labels=SERVICE_LABELS,
        )
        replicas = GaugeMetricFamily(
            metrics.SERVICE_REPLICAS, "Replicas of the service that are ready", labels=SERVICE_LABELS
        )
        decisions = CounterMetricFamily(
            metrics.AUTOSCALER_DECISIONS,
            "Replica counts the autoscaler set, by direction",
            labels=["project", "service", "direction"],
        )
        by_gateway: dict[str, list[dict[str, ClusterStats]]] = {}
        for service in self._mirror.services.values():
            gateway = self._mirror.gateways.get(service.spec.gateway_id)
            if gateway is None:
                continue
            labels = [service.project, gateway.name, service.name]
            if gateway.id not in by_gateway:
                by_gateway[gateway.id] = list(self._envoy_stats.of_gateway(gateway.id))
            totals = service_totals(by_gateway[gateway.id], backend_name(service))
            for code_class, total in totals.requests.items():
                requests.add_metric([*labels, code_class], total)
            unauthorized.add_metric(labels, self._answered.unauthorized[backend_name(service)])
            limited.add_metric(labels, self._answered.rate_limited[backend_name(service)])
            merged = totals.latency
            if merged is not None:
                # Envoy keeps milliseconds; Prometheus's convention is seconds.
                latency.add_metric(labels, _buckets(merged.bounds, merged.counts, 0.001), merged.total / 1000)
            active.add_metric(labels, totals.active_connections)
            replicas.add_metric(labels, service.status.ready_replicas)
            for direction in ("up", "down"):
                taken = self._decisions[(service.id, direction)]
                if taken:
                    decisions.add_metric([service.project, service.name, direction], taken)
        yield from (requests, unauthorized, limited, latency, active, replicas, decisions)

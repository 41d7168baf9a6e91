"""gateway_xds's series: labelled by the registry's names only, a service's counts summed over its own
gateway's Envoys, and nothing an Envoy makes up (a cluster it was never given, another gateway's
service) becomes a series or a count."""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gatehouse import metrics
from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import resources_pb2
from gateway_xds.observe.collector import XdsCollector
from gateway_xds.observe.envoy_stats import ClusterStats, EnvoyStats, Histogram
from gateway_xds.observe.log_sampling import LogSampling
from gateway_xds.observe.responses import AnsweredRequests
from gateway_xds.observe.xds import XdsObserver
from gateway_xds.server.stats import ServerStats
from gateway_xds.testing.reporters import NullReporter
from services.certificates.metrics import CertificateCollector


def _mirror() -> RegistryMirror:
    mirror = RegistryMirror()
    for gw_id, project in (("g1", "alpha"), ("g2", "beta")):
        mirror.gateways[gw_id] = resources_pb2.Gateway(id=gw_id, project=project, name="edge")
        mirror.services[f"s-{gw_id}"] = resources_pb2.Service(
            id=f"s-{gw_id}",
            project=project,
            name="web",
            spec=resources_pb2.ServiceSpec(gateway_id=gw_id),
            status=resources_pb2.ServiceStatus(ready_replicas=2),
        )
    return mirror


def _stats(ok: float, latency_counts: tuple[int, ...]) -> ClusterStats:
    return ClusterStats(
        counters={"upstream_rq_2xx": ok},
        gauges={"upstream_cx_active": 1},
        latency=Histogram((10.0, 100.0), latency_counts, 42.0),
    )


def _scrape(collector: XdsCollector) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _collector(envoy_stats: EnvoyStats, answered: AnsweredRequests | None = None) -> XdsCollector:
    return XdsCollector(
        _mirror(),
        envoy_stats,
        XdsObserver(NullReporter()),
        ServerStats(),
        answered or AnsweredRequests(),
        Counter(),
    )


def test_a_services_counts_are_summed_over_its_gateways_envoys_only() -> None:
    envoy_stats = EnvoyStats()
    envoy_stats.record("gateway/g1/0", "g1", {"svc_alpha_web": _stats(5, (1, 2, 0))})
    envoy_stats.record("gateway/g1/1", "g1", {"svc_alpha_web": _stats(7, (0, 1, 1))})
    # Gateway g2's Envoy reports g1's service: it is not g1's, so it counts for nobody.
    envoy_stats.record("gateway/g2/0", "g2", {"svc_alpha_web": _stats(1000, (9, 9, 9))})
    samples = _scrape(_collector(envoy_stats))
    alpha = frozenset({("project", "alpha"), ("gateway", "edge"), ("service", "web")})
    beta = frozenset({("project", "beta"), ("gateway", "edge"), ("service", "web")})
    requests = f"{metrics.SERVICE_REQUESTS}_total"
    assert samples[(requests, alpha | {("code_class", "2xx")})] == 12
    assert samples[(requests, beta | {("code_class", "2xx")})] == 0
    latency = metrics.SERVICE_UPSTREAM_LATENCY
    assert samples[(f"{latency}_bucket", alpha | {("le", "0.01")})] == 1
    assert samples[(f"{latency}_bucket", alpha | {("le", "0.1")})] == 4
    assert samples[(f"{latency}_bucket", alpha | {("le", "+Inf")})] == 5
    assert samples[(f"{latency}_sum", alpha)] == 0.084
    assert samples[(metrics.SERVICE_ACTIVE_CONNECTIONS, alpha)] == 2
    assert samples[(metrics.SERVICE_REPLICAS, beta)] == 2


def test_clusters_and_services_the_registry_does_not_know_make_no_series() -> None:
    envoy_stats = EnvoyStats()
    made_up = {f"svc_x_{i}": _stats(1, (1, 0, 0)) for i in range(500)}
    envoy_stats.record("gateway/g1/0", "g1", made_up)
    answered = AnsweredRequests()
    for i in range(500):
        answered.logged(f"svc_made_up_{i}", 401)
        answered.logged(f"svc_made_up_{i}", 429)
    samples = _scrape(_collector(envoy_stats, answered))
    services = {dict(labels).get("service") for _, labels in samples}
    assert services <= {None, "web"}
    projects = {dict(labels).get("project") for _, labels in samples}
    assert projects <= {None, "alpha", "beta"}


def test_a_reports_missing_stats_keep_their_last_value() -> None:
    envoy_stats = EnvoyStats()
    envoy_stats.record("gateway/g1/0", "g1", {"svc_alpha_web": _stats(5, (1, 0, 0))})
    envoy_stats.record(
        "gateway/g1/0", "g1", {"svc_alpha_web": ClusterStats(gauges={"upstream_cx_active": 0})}
    )
    samples = _scrape(_collector(envoy_stats))
    alpha = frozenset({("project", "alpha"), ("gateway", "edge"), ("service", "web"), ("code_class", "2xx")})
    assert samples[(f"{metrics.SERVICE_REQUESTS}_total", alpha)] == 5


def test_an_envoy_that_stopped_reporting_leaves() -> None:
    now = [0.0]
    envoy_stats = EnvoyStats(clock=lambda: now[0])
    envoy_stats.record("gateway/g1/0", "g1", {"svc_alpha_web": _stats(5, (1, 0, 0))})
    now[0] = 301.0
    assert list(envoy_stats.of_gateway("g1")) == []


def test_ack_latency_is_timed_from_publication_once_per_revision() -> None:
    now = [10.0]
    observer = XdsObserver(NullReporter(), clock=lambda: now[0])
    observer.connected("gateway/g1/0", "g1")
    observer.published("g1", 7)
    now[0] = 10.2
    observer.acked("gateway/g1/0", "g1", 7)
    observer.acked("gateway/g1/0", "g1", 7)
    observer.rejected("gateway/g1/0", "g1", "type", "8", "bad")
    gateway = observer.gateways["g1"]
    assert sum(gateway.ack_latency.counts) == 1
    assert gateway.ack_latency.counts[gateway.ack_latency.bounds.index(0.25)] == 1
    assert gateway.nacks == 1


def test_autoscaler_decisions_are_counted_per_known_service() -> None:
    decisions: Counter[tuple[str, str]] = Counter({("s-g1", "up"): 2, ("s-g2", "down"): 1, ("gone", "up"): 5})
    collector = XdsCollector(
        _mirror(), EnvoyStats(), XdsObserver(NullReporter()), ServerStats(), AnsweredRequests(), decisions
    )
    samples = _scrape(collector)
    name = f"{metrics.AUTOSCALER_DECISIONS}_total"
    found = {
        (dict(labels)["project"], dict(labels)["direction"]): v
        for (n, labels), v in samples.items()
        if n == name
    }
    assert found == {("alpha", "up"): 2, ("beta", "down"): 1}


def test_certificate_expiry_per_hostname_of_known_gateways() -> None:
    mirror = _mirror()
    issued = resources_pb2.TlsCertificate(
        id="c1", project="alpha", gateway_id="g1", hostnames=["a.example.com"]
    )
    issued.not_after.FromSeconds(1_900_000_000)
    pending = resources_pb2.TlsCertificate(
        id="c2", project="beta", gateway_id="g2", hostnames=["b.example.com"]
    )
    orphan = resources_pb2.TlsCertificate(
        id="c3", project="x", gateway_id="gone", hostnames=["c.example.com"]
    )
    orphan.not_after.FromSeconds(1)
    mirror.certificates = {c.id: c for c in (issued, pending, orphan)}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CertificateCollector(mirror))
    text = generate_latest(registry).decode()
    assert (
        f'{metrics.CERTIFICATE_EXPIRY}{{gateway="edge",hostname="a.example.com",project="alpha"}} 1.9e+09'
        in text
    )
    assert "b.example.com" not in text and "c.example.com" not in text


def test_401s_and_429s_are_counted_from_access_log_entries() -> None:
    answered = AnsweredRequests()
    for status in (401, 401, 429, 200, 503):
        answered.logged("svc_main_web", status)
    answered.logged("", 401)  # matched no service
    assert (answered.unauthorized["svc_main_web"], answered.rate_limited["svc_main_web"]) == (2, 1)
    assert set(answered.unauthorized) == {"svc_main_web"}


def test_the_share_of_successes_logged_is_the_lowest_of_each_gateways_envoys() -> None:
    sampling = LogSampling(budget=10)
    for node in ("gateway/g1/0", "gateway/g1/1", "gateway/g9/0"):
        sampling.attach(node)
    for _ in range(1000):
        sampling.received("gateway/g1/1", 200)
        sampling.received("gateway/g9/0", 200)
    sampling.judge(1.0)
    collector = XdsCollector(
        _mirror(),
        EnvoyStats(),
        XdsObserver(NullReporter()),
        ServerStats(),
        AnsweredRequests(),
        Counter(),
        sampling,
    )
    samples = _scrape(collector)
    shares = {
        dict(labels)["project"]: value
        for (name, labels), value in samples.items()
        if name == metrics.ACCESS_LOG_SUCCESS_PERCENT
    }
    assert shares == {"alpha": 0.5, "beta": 100}

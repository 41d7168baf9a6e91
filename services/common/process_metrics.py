"""The metrics every Gatehouse process keeps about itself: its gRPC calls and its reconcilers.

Labels are method names and reconciler names, both fixed by the code, and gRPC status codes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gatehouse import metrics

GRPC_REQUESTS = Counter(
    metrics.GRPC_REQUESTS, "gRPC calls answered, by method and status code", ["method", "code"]
)
GRPC_DURATION = Histogram(
    metrics.GRPC_DURATION,
    "Time to answer a unary gRPC call (a stream: until it ends)",
    ["method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RECONCILES = Counter(
    metrics.RECONCILES, "Reconciles done, by reconciler and result", ["reconciler", "result"]
)
RECONCILE_DURATION = Histogram(
    metrics.RECONCILE_DURATION,
    "Time one reconcile took",
    ["reconciler"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
REGISTRY_REVISION = Gauge(metrics.REGISTRY_REVISION, "The last revision the registry took")


def observe_call(method: str, code: str, seconds: float) -> None:
    GRPC_REQUESTS.labels(method, code).inc()
    GRPC_DURATION.labels(method).observe(seconds)


def observe_reconcile(reconciler: str, ok: bool, seconds: float) -> None:
    RECONCILES.labels(reconciler, "ok" if ok else "error").inc()
    RECONCILE_DURATION.labels(reconciler).observe(seconds)

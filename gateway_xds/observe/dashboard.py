"""What the web dashboard shows (services/common/metrics_endpoint.py serves it at `/`): gateways
with their Envoys' configuration status, services with their counters, replicas, certificates with
expiry; only the projects the viewer belongs to (all for a server admin). Rates and percentiles are
the page's to work out between two views."""

from __future__ import annotations

import time
from typing import Any

from gatehouse.client.mirror import RegistryMirror
from gatehouse.metrics import CODE_CLASSES
from gatehouse.v1 import resources_pb2
from gateway_xds.observe.envoy_stats import EnvoyStats, service_totals
from gateway_xds.provider.build import backend_name


def _state(value: int, enum: Any, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower() if value else "unknown"


def dashboard_view(
    mirror: RegistryMirror, envoy_stats: EnvoyStats, projects: frozenset[str] | None
) -> dict[str, Any]:
    """`projects`: those the viewer may see; None: every project (a server admin)."""

    def visible(project: str) -> bool:
        return projects is None or project in projects

    gateways = [g for g in mirror.gateways.values() if visible(g.project)]
    names = {g.id: g.name for g in gateways}
    reports = {gateway.id: list(envoy_stats.of_gateway(gateway.id)) for gateway in gateways}
    services = [s for s in mirror.services.values() if visible(s.project)]
    service_names = {s.id: s.name for s in services}
    return {
        "time": time.time(),
        "code_classes": list(CODE_CLASSES),
        "gateways": [
            {
                "project": g.project,
                "name": g.name,
                "state": _state(g.status.state, resources_pb2.GatewayState, "GATEWAY_STATE_"),
                "address": g.status.hostname,
                "message": g.status.message,
                "envoys": [
                    {
                        "node": e.node_id,
                        "connected": e.connected,
                        "acked_revision": e.acked_revision,
                        "rejected": e.rejected,
                    }
                    for e in g.status.envoys
                ],
            }
            for g in sorted(gateways, key=lambda g: (g.project, g.name))
        ],
        "services": [
            _service(s, names, reports) for s in sorted(services, key=lambda s: (s.project, s.name))
        ],
        "replicas": [
            {
                "project": r.project,
                "service": service_names[r.service_id],
                "id": r.id,
                "address": r.address,
                "ready": r.ready,
            }
            for r in sorted(mirror.replicas.values(), key=lambda r: r.id)
            if r.service_id in service_names
        ],
        "certificates": [
            {
                "project": c.project,
                "gateway": names[c.gateway_id],
                "hostnames": list(c.hostnames),
                "state": c.state,
                "not_after": c.not_after.seconds if c.HasField("not_after") else None,
            }
            for c in mirror.certificates.values()
            if c.gateway_id in names
        ],
    }


def _service(
    service: resources_pb2.Service, gateway_names: dict[str, str], reports: dict[str, list[Any]]
) -> dict[str, Any]:
    totals = service_totals(reports.get(service.spec.gateway_id, []), backend_name(service))
    latency = totals.latency
    return {
        "project": service.project,
        "name": service.name,
        "gateway": gateway_names.get(service.spec.gateway_id, ""),
        "state": _state(service.status.state, resources_pb2.ServiceState, "SERVICE_STATE_"),
        "message": service.status.message,
        "urls": list(service.status.urls),
        "ready_replicas": service.status.ready_replicas,
        "desired_replicas": service.status.desired_replicas,
        "requests": totals.requests,
        "latency_bounds_ms": list(latency.bounds) if latency else [],
        "latency_counts": list(latency.counts) if latency else [],
        "active_connections": totals.active_connections,
    }

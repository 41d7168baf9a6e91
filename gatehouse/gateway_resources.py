"""The names of the Envoy resources a service gets on its gateway, and what the gateway's Envoys refused
of them.

gateway_xds names the resources; the registry and the CLI read an Envoy's rejections back by these
names (`EnvoyStatus.rejected_resources`), so the rule lives here, once.
"""

from __future__ import annotations

from collections.abc import Iterable

from gatehouse.v1 import resources_pb2

HTTP_PORT = 80
HTTP_LISTENER = "http"
# The cluster of every gateway host's bootstrap through which its Envoy reaches gateway_xds: ADS,
# the credential and rate limit checks, the stats it pushes.
XDS_CLUSTER = "gatehouse_xds"
BACKEND_PREFIX = "svc_"
# What the stats of services' clusters start with (gateway_xds reads them from the stats pushed).
SERVICE_STATS_PREFIX = f"cluster.{BACKEND_PREFIX}"

# xDS type short names as a sentence says them.
_KINDS = {
    "Listener": "listener",
    "Cluster": "cluster",
    "ClusterLoadAssignment": "endpoints",
    "RouteConfiguration": "routes",
    "ScopedRouteConfiguration": "route scope",
    "Secret": "certificate",
}


def listener_name(logical_port: int) -> str:
    """The listener of a gateway port: `http` for :80, `port-<n>` for a mapped port."""
    return HTTP_LISTENER if logical_port == HTTP_PORT else f"port-{logical_port}"


def backend_name(project: str, service: str) -> str:
    """`svc_<project>_<name>`, the name of a service's cluster, endpoints and route scope. Names cannot
    hold `_`, so no two services share one (with `-`, project `a` + service `b-c` and project `a-b` +
    service `c` would, on a shared gateway)."""
    return f"{BACKEND_PREFIX}{project}_{service}"


def canary_backend_name(backend: str) -> str:
    """The cluster and endpoints of a service's canary: `svc_<project>_<name>_canary` (names hold no
    `_`, so it is no other service's backend)."""
    return f"{backend}_canary"


def service_of_backend(backend: str) -> tuple[str, str] | None:
    """(project, service) of a backend name; None for anything else."""
    prefix, _, rest = backend.partition("_")
    project, _, service = rest.partition("_")
    if prefix != "svc" or not project or not service or "_" in service:
        return None
    return project, service


def service_resources(service: resources_pb2.Service) -> frozenset[str]:
    """The names of the resources that are the service's own: its backend's, and a port-mapped
    service's listener (and that listener's route configuration, which has its name)."""
    backend = backend_name(service.project, service.name)
    names = {backend, canary_backend_name(backend)}
    if not service.spec.hostname and service.spec.gateway_port:
        names.add(listener_name(service.spec.gateway_port))
    return frozenset(names)


def refused(
    service: resources_pb2.Service, envoys: Iterable[resources_pb2.EnvoyStatus], revision: int
) -> list[resources_pb2.RejectedResource]:
    """What the gateway's connected Envoys that have answered `revision` refuse of the service's own
    resources (an Envoy that has not got that far yet may refuse what is no longer asked of it)."""
    names = service_resources(service)
    found: dict[tuple[str, str], resources_pb2.RejectedResource] = {}
    for envoy in envoys:
        if not envoy.connected or envoy.acked_revision < revision:
            continue
        for rejected in envoy.rejected_resources:
            if rejected.name in names:
                found.setdefault((rejected.type, rejected.name), rejected)
    return [found[key] for key in sorted(found)]


def refusal_message(gateway_name: str, refused: Iterable[resources_pb2.RejectedResource]) -> str:
    """`gateway "gw" refused listener port-5001: cannot bind '127.0.0.2:5001': Address already in use`"""
    parts = [f"{_KINDS.get(r.type, r.type.lower())} {r.name}: {r.reason}" for r in refused]
    return f'gateway "{gateway_name}" refused ' + "; ".join(parts)


def liveness(envoys: Iterable[resources_pb2.EnvoyStatus], revision: int) -> resources_pb2.Liveness:
    """Whether the gateway's Envoys serve `revision`: every connected one has applied it, and one at
    least is connected (a gateway no Envoy streams from serves nothing)."""
    connected = [envoy for envoy in envoys if envoy.connected]
    applied = sum(1 for envoy in connected if envoy.acked_revision >= revision)
    return resources_pb2.Liveness(
        live=bool(connected) and applied == len(connected),
        revision=revision,
        envoys=len(connected),
        applied=applied,
    )

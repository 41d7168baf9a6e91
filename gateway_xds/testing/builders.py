"""Gateway IRs for tests and benchmarks: domain mode (one scope per service) and port mapping."""

from __future__ import annotations

from collections.abc import Iterable

from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener, RouteTable
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.ir.service_route import ServiceRoute

DOMAIN = "example.test"


def service_name(index: int) -> str:
    return f"svc-main-s{index:05d}"


def domain_route(name: str, endpoints: Iterable[Endpoint], domain: str = DOMAIN) -> ServiceRoute:
    """A domain-mode service `name` at `<name>.<domain>` on the `http` listener."""
    host = f"{name}.{domain}"
    return ServiceRoute("http", VirtualHost(name, (host,), name), Backend(name, tuple(endpoints)))


def http_listener(port: int = 8080, route_table: RouteTable = RouteTable.PER_HOST) -> HTTPListener:
    return HTTPListener("http", "127.0.0.1", port, route_table=route_table)


def domain_gateway(
    services: int | Iterable[str],
    endpoints: Iterable[Endpoint] = (Endpoint("127.0.0.1", 9000),),
    gateway_id: str = "gw-1",
    port: int = 8080,
) -> GatewayIR:
    names = [service_name(i) for i in range(services)] if isinstance(services, int) else list(services)
    endpoints = tuple(endpoints)
    routes = [domain_route(name, endpoints) for name in names]
    listener = http_listener(port)
    return GatewayIR(
        gateway_id=gateway_id,
        listeners=(
            HTTPListener(
                listener.name,
                listener.address,
                listener.port,
                tuple(r.virtual_host for r in routes),
                listener.route_table,
            ),
        ),
        backends=tuple(r.backend for r in routes),
    )

"""Downstream side of the IR: HTTP listeners and how they find their virtual hosts."""

from dataclasses import dataclass, replace
from enum import StrEnum

from gateway_xds.ir.routes import VirtualHost
from gateway_xds.ir.tls import TLSPort


class RouteTable(StrEnum):
    """How a listener's virtual hosts reach Envoy.

    SINGLE: one RouteConfiguration (named like the listener) holds every virtual host; fine for a
    listener with one or a few hosts (a mapped port), but a change re-sends and re-builds all of them.
    PER_HOST: one scope per virtual host (scoped routes, SRDS), chosen by the request's Host without
    its port; a change sends and builds only that host's scope, so its cost does not grow with the
    number of services. Its virtual hosts need exactly one exact, lower-case domain.
    """

    SINGLE = "single"
    PER_HOST = "per_host"


@dataclass(frozen=True)
class HTTPListener:
    """A listening socket with an HTTP connection manager."""

    name: str
    address: str
    port: int
    virtual_hosts: tuple[VirtualHost, ...] = ()
    route_table: RouteTable = RouteTable.SINGLE
    # The same virtual hosts over TLS on another port, e.g. :443 beside :80.
    tls: TLSPort | None = None
    # The cluster (static, in every gateway's bootstrap) of the control plane, which counts shared rate
    # limits and wakes services scaled to zero; empty: none, and virtual hosts needing it are refused.
    authorization_cluster: str = ""
    # Of its successful requests, the most logged to that same control plane (gRPC access logs), 0 to
    # 100; errors are all logged (0: no access log).
    access_log_percent: int = 100

    def shell(self) -> "HTTPListener":
        """The listener without its virtual hosts: what its Listener resources depend on."""
        return replace(self, virtual_hosts=())

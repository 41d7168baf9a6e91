"""Gateway ports a service may not map: the gateway's own HTTP, HTTPS and agent tunnel listeners, and
the ports the Gatehouse server listens on (a local gateway binds on the server's machine)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common.settings import Settings
from services.registry.configurations import DEFAULT_GATEWAY_PORT
from services.registry.convert import gateway_config, gateway_status
from services.registry.models import GatewayRow

CLOUD_PORTS = (80, 443)


@dataclass(frozen=True)
class ReservedPorts:
    # port -> what it is, for the error
    server: dict[int, str]
    # The ports that stand for a local gateway's :80 and :443 until it reports its own.
    local_http: int
    local_https: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ReservedPorts:
        named = (
            (settings.join_port, "the Gatehouse server's join port"),
            (settings.xds_port, "the Gatehouse server's xDS port"),
            (settings.api_port, "the Gatehouse server's API port"),
            (settings.agent_tunnel_port, "where the gateway takes `gatehouse agent` tunnels"),
        )
        return cls(
            server={port: what for port, what in named if port},
            local_http=settings.local_http_port,
            local_https=settings.local_https_port,
        )

    def _gateway_ports(self, gateway: GatewayRow) -> tuple[int, int]:
        status = gateway_status(gateway)
        if status.http_port:
            return status.http_port, status.https_port
        if gateway_config(gateway).backend == "local":
            return self.local_http, self.local_https
        return CLOUD_PORTS

    def check(self, port: int, app_port: int, gateway: GatewayRow) -> None:
        """INVALID_ARGUMENT when a service may not take gateway port `port`. Port 80 is the gateway's
        HTTP listener itself (`port: 8000` alone), wherever that listener binds."""
        if port == DEFAULT_GATEWAY_PORT:
            return
        http, https = self._gateway_ports(gateway)
        what = {http: "the gateway's HTTP port", https: "the gateway's HTTPS port"}.get(port)
        what = what or self.server.get(port)
        if what is not None:
            raise InvalidArgument(
                f'gateway port {port} is reserved on gateway "{gateway.name}": it is {what}; '
                f'map another one (port: "<gateway-port>:{app_port}")'
            )

"""The one interface every gateway backend implements, and the errors it may raise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gatehouse.v1 import resources_pb2


class BackendError(Exception):
    """A failure the user must act on: the gateway fails with this message."""


class NotReady(Exception):
    """The work is under way (a host is booting, a load balancer is draining): look again later.

    The reconciler shows the message beside the gateway's state and requeues the gateway, so no
    worker waits on a cloud.
    """

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    listen_address: str = "0.0.0.0"
    http_port: int = 80
    https_port: int = 443
    # Every host's address when there are several (`replicas: N` without a load balancer).
    addresses: tuple[str, ...] = ()


class GatewayBackend(Protocol):
    name: str

    async def create_or_update(self, gateway: resources_pb2.Gateway) -> HostInfo:
        """Makes the gateway's hosts exist and run Envoy; safe to call again at any time.

        Raises BackendError when the user must act, NotReady while hosts are still coming up.
        """
        ...

    async def delete(self, gateway: resources_pb2.Gateway) -> None:
        """Removes everything made for the gateway; safe to call again at any time.

        Raises NotReady while something is still going away.
        """
        ...

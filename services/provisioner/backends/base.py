"""The one interface every gateway backend implements, and the errors it may raise."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
class GatewayHost:
    """One host of a gateway as its backend lists it: the slot it fills (its Envoy is node
    `gateway/<id>/<index>`) and the backend's id for this very host (a replacement has another)."""

    index: int
    id: str
    # When the host was made, in seconds since the epoch; None: unknown (the provisioner counts from
    # when it first saw the host).
    launched_at: float | None = None


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    listen_address: str = "0.0.0.0"
    http_port: int = 80
    https_port: int = 443
    # Every host's address when there are several (`replicas: N` without a load balancer).
    addresses: tuple[str, ...] = ()
    # The hosts up as far as the backend can tell, by index; their Envoys decide whether the gateway
    # runs. Empty: the backend lists none (host 0 .. replicas-1 are looked for by node id only).
    hosts: tuple[GatewayHost, ...] = ()
    # Work still under way though every slot has a host (a rolling replacement): the gateway is not
    # running yet whatever its Envoys say.
    pending: str = ""


class GatewayBackend(Protocol):
    name: str

    async def create_or_update(
        self, gateway: resources_pb2.Gateway, serving: Collection[str] | None = None
    ) -> HostInfo:
        """Makes the gateway's hosts exist and run Envoy; safe to call again at any time.

        `serving`: ids of the hosts whose Envoy has connected and acknowledged its configuration (the
        provisioner's view); a rolling replacement takes the next host only once the last new one
        serves. None: the backend judges by what the cloud says alone.

        Raises BackendError when the user must act, NotReady while hosts are still coming up.
        """
        ...

    async def delete(self, gateway: resources_pb2.Gateway) -> None:
        """Removes everything made for the gateway; safe to call again at any time.

        Raises NotReady while something is still going away.
        """
        ...


@runtime_checkable
class ReplacesHosts(Protocol):
    """Optional: a backend that can show a host's console and replace a host whose Envoy never came."""

    async def host_output(self, gateway: resources_pb2.Gateway, host: GatewayHost) -> str | None:
        """The host's console or serial output (the end of it), where the provider offers it."""
        ...

    async def replace_host(self, gateway: resources_pb2.Gateway, host: GatewayHost) -> None:
        """Deletes the host; the next `create_or_update` makes its slot a new one."""
        ...

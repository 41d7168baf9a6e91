"""What the xDS server tells the rest of the control plane about each connected Envoy."""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Rejection:
    """One resource a node refused: Envoy applies a response's resources one by one and names the
    ones it could not apply (server/rejections.py works out which)."""

    type_url: str
    name: str
    version: str | None  # the version refused; None: its removal was refused
    reason: str  # Envoy's words for this resource
    message: str  # Envoy's whole message


class SyncReporter(Protocol):
    """Called from the stream's task: implementations must return quickly (queue, don't await I/O)."""

    def connected(self, node_id: str, gateway_id: str) -> None: ...

    def disconnected(self, node_id: str, gateway_id: str) -> None: ...

    def acked(self, node_id: str, gateway_id: str, revision: int) -> None:
        """The node applied everything it needs of the snapshot of `revision`."""
        ...

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        """The node NACKed `version` of `type_url` with Envoy's error `message`."""
        ...

    def rejections(self, node_id: str, gateway_id: str, rejected: tuple[Rejection, ...]) -> None:
        """What the node refuses now (replaces the last report): reported when it changes, and before
        the stream's first `acked`, so a new stream's report replaces an earlier stream's."""
        ...

"""What the SotW and Delta variants of one ADS stream share, without I/O.

Feed a protocol the stream's requests and the gateway's snapshots; it returns the responses to send,
in make-before-break order, and tells the reporter when the node has applied a whole snapshot or
rejected something. Cluster removals wait until the node has acknowledged the routing that stopped
using them.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import Message

from gateway_xds.cache.resource import Resource
from gateway_xds.cache.snapshot import Changes, Snapshot
from gateway_xds.resources import CLUSTER, ENDPOINT, ROUTING_TYPES, short_name
from gateway_xds.server.reporter import SyncReporter
from gateway_xds.server.view import DesiredView

log = logging.getLogger(__name__)


class Encodable(Protocol):
    """What the stream needs of a response: a message, or one encoded already (encoding.py)."""

    def ByteSize(self) -> int: ...

    def SerializeToString(self) -> bytes: ...


Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Encodable)


@dataclass
class StreamCounters:
    """What happened on one stream; the stream's plumbing adds the byte counts."""

    responses: int = 0
    resources_sent: int = 0
    pushes: int = 0
    bytes_sent: int = 0
    acks: int = 0
    nacks: int = 0


class StreamProtocol(ABC, Generic[Request, Response]):
    def __init__(self, node_id: str, gateway_id: str, reporter: SyncReporter) -> None:
        self.node_id = node_id
        self.gateway_id = gateway_id
        self.view: DesiredView | None = None
        self.counters = StreamCounters()
        self._reporter = reporter
        self._nonces = itertools.count(1)
        self._reported: Snapshot | None = None

    @property
    def snapshot(self) -> Snapshot | None:
        return self.view.snapshot if self.view is not None else None

    # -- the stream's two inputs ---------------------------------------------------------------------

    def on_request(self, request: Request) -> list[Response]:
        responses = self._handle(request)
        responses += self._release_if_settled()
        self._report_if_applied()
        return responses

    def on_snapshot(self, snapshot: Snapshot) -> list[Response]:
        """Make `snapshot` current and push what the node lacks of it."""
        old = self.view
        if old is not None and old.snapshot is snapshot:
            return []
        changes = snapshot.changed_since(old.snapshot) if old is not None else None
        leaving = self._clusters_leaving(old, snapshot, changes)
        retained = self._retain(old, snapshot, leaving, changes)
        self.view = DesiredView(snapshot, retained)
        self._view_changed(old, changes)
        responses = self._push(changes, old)
        responses += self._release_if_settled()
        self._report_if_applied()
        return responses

    def expects_bulk(self, request: Request) -> bool:
        """Whether answering `request` may build a large response (a node's first sync of a type):
        the server lets only a few streams do that at once, which bounds its memory."""
        return False

    @property
    def in_flight(self) -> bool:
        """Responses the node has not answered yet."""
        return bool(self._pending_types())

    # -- for the variants ------------------------------------------------------------------------

    @abstractmethod
    def _handle(self, request: Request) -> list[Response]: ...

    @abstractmethod
    def _push(self, changes: Changes | None, old: DesiredView | None) -> list[Response]:
        """Responses for everything the node lacks after a view change, in PUSH_ORDER."""

    @abstractmethod
    def _view_changed(self, old: DesiredView | None, changes: Changes | None) -> None: ...

    @abstractmethod
    def _node_clusters(self, candidates: Iterable[str] | None) -> set[str]:
        """Which of `candidates` (None: any) are clusters the node has or is being sent."""

    @abstractmethod
    def _pending_types(self) -> set[str]:
        """Types with a response the node has not answered."""

    @abstractmethod
    def _routing_settled(self) -> bool:
        """Whether the node acknowledged every routing resource it was sent (answered and accepted)."""

    @abstractmethod
    def _applied(self) -> bool:
        """Whether the node has acknowledged the whole current view."""

    def _next_nonce(self) -> str:
        return str(next(self._nonces))

    def _rejected(self, type_url: str, version: str, message: str) -> None:
        self.counters.nacks += 1
        log.warning(
            "node %s rejected %s %s: %s", self.node_id, short_name(type_url), version or "(none)", message
        )
        self._reporter.rejected(self.node_id, self.gateway_id, type_url, version, message)

    # -- make-before-break -------------------------------------------------------------------------

    def _clusters_leaving(self, old: DesiredView | None, new: Snapshot, changes: Changes | None) -> set[str]:
        candidates: Set[str] | None = None
        if changes is not None and old is not None:
            candidates = changes.get(CLUSTER, frozenset()) | old.retained.get(CLUSTER, {}).keys()
        return {name for name in self._node_clusters(candidates) if new.get(CLUSTER, name) is None}

    def _retain(
        self, old: DesiredView | None, new: Snapshot, leaving: set[str], changes: Changes | None
    ) -> dict[str, dict[str, Resource | None]]:
        """Clusters the node may still route to stay until the new routing is acknowledged."""
        if not leaving:
            return {}
        routing_changes = changes is None or any(changes.get(t) for t in ROUTING_TYPES)
        if not routing_changes and self._routing_settled():
            return {}
        clusters: dict[str, Resource | None] = {}
        endpoints: dict[str, Resource | None] = {}
        for name in leaving:
            cluster = old.get(CLUSTER, name) if old is not None else None
            clusters[name] = cluster
            for eds_name in cluster.references.get(ENDPOINT, ()) if cluster is not None else ():
                if new.get(ENDPOINT, eds_name) is None and old is not None:
                    endpoints[eds_name] = old.get(ENDPOINT, eds_name)
        return {CLUSTER: clusters, ENDPOINT: endpoints} if endpoints else {CLUSTER: clusters}

    def _release_if_settled(self) -> list[Response]:
        view = self.view
        if view is None or not view.retained or not self._routing_settled():
            return []
        released = {t: frozenset(names) for t, names in view.retained.items()}
        self.view = DesiredView(view.snapshot)
        self._view_changed(view, released)
        return self._push(released, view)

    # -- reporting -----------------------------------------------------------------------------------

    def _report_if_applied(self) -> None:
        view = self.view
        if view is None or view.snapshot is self._reported or not self._applied():
            return
        self._reported = view.snapshot
        self._reporter.acked(self.node_id, self.gateway_id, view.snapshot.revision)

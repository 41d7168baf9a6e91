"""What the SotW and Delta variants of one ADS stream share, without I/O.

Feed a protocol the stream's requests and the gateway's snapshots; it returns the responses to send,
in make-before-break order, and tells the reporter when the node has applied a whole snapshot or
rejected something. Cluster removals wait until the node has acknowledged the routing that stopped
using them.

A resource the node refused is settled all the same: it is kept as rejected (name and version, with
Envoy's reason) and counts as answered, so one listener that cannot bind holds up nothing else; the
node "applied" a snapshot once it has accepted or refused each resource of it. A new version of the
resource is sent as usual, and its acceptance (or its removal) ends the rejection. What only refused
resources refer to (a refused listener's route configuration) is not needed either: the node never
asks for it.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from google.protobuf.message import Message

from gateway_xds.cache.resource import Resource
from gateway_xds.cache.snapshot import Changes, Snapshot
from gateway_xds.resources import CLUSTER, ENDPOINT, ROUTING_TYPES, WILDCARD_TYPES, short_name
from gateway_xds.server import rejections
from gateway_xds.server.reporter import Rejection, SyncReporter
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
        # type URL -> name -> what the node refuses now.
        self.rejected: dict[str, dict[str, Rejection]] = {}
        self._rejections_changed = False
        self._rejections_reported = False

    @property
    def snapshot(self) -> Snapshot | None:
        return self.view.snapshot if self.view is not None else None

    # -- the stream's two inputs ---------------------------------------------------------------------

    def on_request(self, request: Request) -> list[Response]:
        responses = self._handle(request)
        responses += self._release_if_settled()
        self._report()
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
        self._report()
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

    def _rejected(
        self, type_url: str, version: str, answered: Mapping[str, str | None], message: str
    ) -> dict[str, Rejection]:
        """A NACK of a response that carried `answered` (name -> version, None for a removal): which
        of them the node refused, now kept as its rejections of the type."""
        message = message.strip()  # Envoy ends it with a newline
        self.counters.nacks += 1
        log.warning(
            "node %s rejected %s %s: %s", self.node_id, short_name(type_url), version or "(none)", message
        )
        self._reporter.rejected(self.node_id, self.gateway_id, type_url, version, message)
        refused = rejections.refused(type_url, answered, message)
        if refused:
            self.rejected.setdefault(type_url, {}).update(refused)
            self._rejections_changed = True
            self._refusals_changed(refused.values())
        return refused

    def _accepted(self, type_url: str, names: Iterable[str] | None = None) -> None:
        """The node applied `names` of the type (None: all of it), or no longer has them to refuse."""
        by_name = self.rejected.get(type_url)
        if not by_name:
            return
        ended: list[Rejection] = []
        if names is None:
            ended = list(by_name.values())
            by_name.clear()
        else:
            for name in names:
                rejection = by_name.pop(name, None)
                if rejection is not None:
                    ended.append(rejection)
        if not by_name:
            del self.rejected[type_url]
        if ended:
            self._rejections_changed = True
            self._refusals_changed(ended)

    def _refusals_changed(self, changed: Iterable[Rejection]) -> None:
        """`changed` began or ended: what they refer to is needed again, or no longer (_excused)."""

    def _excused(self) -> dict[str, set[str]]:
        """Names (of types asked for by name) that only resources the node refuses, at the version
        it refused, refer to: the node never asks for them, so the view is applied without them."""
        view = self.view
        if view is None or not self.rejected:
            return {}
        referrers: Counter[tuple[str, str]] = Counter()
        for type_url, by_name in self.rejected.items():
            for name, rejection in by_name.items():
                resource = view.snapshot.get(type_url, name)
                if resource is None or resource.version != rejection.version:
                    continue
                for ref_type, ref_names in resource.references.items():
                    referrers.update((ref_type, ref) for ref in ref_names if ref_type not in WILDCARD_TYPES)
        excused: dict[str, set[str]] = {}
        for (type_url, name), count in referrers.items():
            if count >= view.snapshot.referenced(type_url).get(name, 0) and not _retained_refer(
                view, type_url, name
            ):
                excused.setdefault(type_url, set()).add(name)
        return excused

    def _references_of(self, changed: Iterable[Rejection]) -> dict[str, set[str]]:
        """What `changed` refer to (in the view) by type, for the types asked for by name."""
        view = self.view
        out: dict[str, set[str]] = {}
        if view is None:
            return out
        for rejection in changed:
            resource = view.get(rejection.type_url, rejection.name)
            for ref_type, ref_names in resource.references.items() if resource is not None else ():
                if ref_type not in WILDCARD_TYPES:
                    out.setdefault(ref_type, set()).update(ref_names)
        return out

    def _refused(self, type_url: str, name: str) -> Rejection | None:
        by_name = self.rejected.get(type_url)
        return by_name.get(name) if by_name else None

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

    def _report(self) -> None:
        if self._rejections_changed:
            self._report_rejections()
        view = self.view
        if view is None or view.snapshot is self._reported or not self._applied():
            return
        if not self._rejections_reported:
            # Before the stream's first `acked`: whatever an earlier stream of the node reported.
            self._report_rejections()
        self._reported = view.snapshot
        self._reporter.acked(self.node_id, self.gateway_id, view.snapshot.revision)

    def _report_rejections(self) -> None:
        self._rejections_changed = False
        self._rejections_reported = True
        current = tuple(r for type_url in sorted(self.rejected) for r in self.rejected[type_url].values())
        self._reporter.rejections(self.node_id, self.gateway_id, current)


def _retained_refer(view: DesiredView, type_url: str, name: str) -> bool:
    return any(
        name in resource.references.get(type_url, ())
        for by_name in view.retained.values()
        for resource in by_name.values()
        if resource is not None
    )

"""The Delta (incremental) protocol of one ADS stream, without I/O.

Versions are tracked per resource: a response carries only the resources whose version the node
lacks, and the names it must drop. What the node has is learnt from `initial_resource_versions` when
it reconnects, so a reconnect re-sends nothing that did not change. Per-name state is kept as
differences from the current snapshot (node_state.py), so a node in step costs no memory per name.
A NACKed response was applied but for the resources Envoy names in its message (rejections.py): the
others count as acknowledged, the named ones as refused at the version sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from gateway_xds.cache.resource import Resource
from gateway_xds.cache.snapshot import Changes
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTING_TYPES, WILDCARD_TYPES
from gateway_xds.server.encoding import EncodedDeltaResponse, ResponseBodies
from gateway_xds.server.node_state import NodeNames, NodeVersions
from gateway_xds.server.protocol import StreamProtocol
from gateway_xds.server.reporter import Rejection, SyncReporter
from gateway_xds.server.view import DesiredView

log = logging.getLogger(__name__)

_ALWAYS_SUBSCRIBED = (CLUSTER, LISTENER)
# How many names a rejection report lists.
_REPORTED_NAMES = 5
# A response with more resources than this is "bulk" (see StreamProtocol.expects_bulk).
BULK_RESOURCES = 1000


@dataclass
class DeltaTypeState:
    requested: bool = False
    wildcard: bool = False
    names: NodeNames = field(default_factory=NodeNames)  # explicit subscriptions
    # What the node has or is being sent; a removal sent drops the name.
    sent: NodeVersions = field(default_factory=NodeVersions)
    # What the node acknowledged.
    acked: NodeVersions = field(default_factory=NodeVersions)
    # nonce -> what the response set (a version) or removed (None).
    pending: dict[str, dict[str, str | None]] = field(default_factory=dict)
    # Names the node refused: offered again with the type's next push, never on their own (no
    # resend loop).
    unconfirmed: set[str] = field(default_factory=set)
    # The node answered a response of the type, or told us what it has of it when it reconnected.
    answered_once: bool = False
    # The node asked for the type and has had no response yet (Envoy waits for one before it
    # finishes initialising, even when there is nothing to send).
    answer_owed: bool = False
    # Names whose acknowledged state differs from the view (required and not acked at its version,
    # or acked and no longer wanted). Empty for every type = the node applied the view.
    mismatch: set[str] = field(default_factory=set)

    def subscribed(self, name: str) -> bool:
        return self.wildcard or name in self.names


class DeltaStreamState(StreamProtocol[discovery_pb2.DeltaDiscoveryRequest, EncodedDeltaResponse]):
    def __init__(
        self, node_id: str, gateway_id: str, reporter: SyncReporter, bodies: ResponseBodies | None = None
    ) -> None:
        super().__init__(node_id, gateway_id, reporter)
        # Shared with the server's other streams: what they send alike is encoded once.
        self._bodies = bodies
        self.types: dict[str, DeltaTypeState] = {t: DeltaTypeState() for t in PUSH_ORDER}
        # Endpoint names of clusters the node had and was sent again: an updated cluster warms
        # again and waits for its endpoints, so they follow even when unchanged.
        self._rewarm: set[str] = set()

    # -- requests ----------------------------------------------------------------------------------

    def expects_bulk(self, request: discovery_pb2.DeltaDiscoveryRequest) -> bool:
        state, view = self.types.get(request.type_url), self.view
        if state is None:
            return False
        if len(request.resource_names_subscribe) > BULK_RESOURCES:
            return True
        first_wildcard = not state.requested and request.type_url in WILDCARD_TYPES
        return (
            first_wildcard
            and view is not None
            and len(view.snapshot.entries(request.type_url)) > BULK_RESOURCES
        )

    def _handle(self, request: discovery_pb2.DeltaDiscoveryRequest) -> list[EncodedDeltaResponse]:
        type_url = request.type_url
        state = self.types.get(type_url)
        if state is None:
            log.debug("node %s asked for unsupported type %s", self.node_id, type_url)
            return []
        candidates: set[str] = set()
        newly_named: set[str] = set()
        if not state.requested:
            state.requested = True
            # A reconnecting node says what it has (and finished initialising long ago): an empty
            # answer would make it re-apply its scopes for nothing.
            state.answer_owed = not request.initial_resource_versions
            state.answered_once = bool(request.initial_resource_versions)
            # Legacy wildcard: a first request naming nothing subscribes to everything.
            state.wildcard = type_url in WILDCARD_TYPES and not request.resource_names_subscribe
            if state.wildcard:
                candidates.update(self._all_names(type_url))
            for name, version in request.initial_resource_versions.items():
                state.sent.set(name, version)
                state.acked.set(name, version)
                candidates.add(name)
        for name in request.resource_names_subscribe:
            if name == "*":
                if not state.wildcard:
                    state.wildcard = True
                    candidates.update(self._all_names(type_url))
            elif name not in state.names:
                state.names.add(name)
                candidates.add(name)
                newly_named.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
                forgotten = [n for n in state.sent.names() if n not in state.names]
            else:
                state.names.discard(name)
                forgotten = [name] if not state.wildcard else []
            # The node forgets what it unsubscribed from.
            for gone in forgotten:
                state.sent.drop(gone)
                state.acked.drop(gone)
                candidates.add(gone)
            self._accepted(type_url, forgotten)
        if request.response_nonce:
            self._on_answer(request, state)
        self._touch(type_url, candidates)
        force: Set[str] = frozenset()
        if type_url == ENDPOINT and self._rewarm:
            candidates |= self._rewarm
            force = set(self._rewarm)
        responses = self._respond(type_url, candidates, newly_named=newly_named, force=force)
        if type_url == CLUSTER and responses:
            responses += self._respond_rewarm()
        return responses

    def _respond_rewarm(self) -> list[EncodedDeltaResponse]:
        if not self._rewarm or not self.types[ENDPOINT].requested:
            return []
        names = set(self._rewarm)
        return self._respond(ENDPOINT, names, force=names)

    def _on_answer(self, request: discovery_pb2.DeltaDiscoveryRequest, state: DeltaTypeState) -> None:
        answered = state.pending.pop(request.response_nonce, None)
        if answered is None:
            return  # an answer to a response this stream does not know (or answered already)
        state.answered_once = True
        refused: Set[str] = frozenset()
        if request.HasField("error_detail"):
            shown = sorted(answered)[:_REPORTED_NAMES]
            more = len(answered) - len(shown)
            names = ", ".join(f"{n}@{answered[n] or 'removed'}" for n in shown) + (
                f" (+{more})" if more else ""
            )
            refused = self._rejected(request.type_url, names, answered, request.error_detail.message).keys()
            state.unconfirmed.update(refused)
        else:
            self.counters.acks += 1
        for name, version in answered.items():
            if name in refused:
                continue
            if version is None:
                state.acked.drop(name)
            elif state.subscribed(name):
                state.acked.set(name, version)
            state.unconfirmed.discard(name)
        self._accepted(request.type_url, (name for name in answered if name not in refused))
        self._touch(request.type_url, answered)

    # -- pushes ------------------------------------------------------------------------------------

    def _push(self, changes: Changes | None, old: DesiredView | None) -> list[EncodedDeltaResponse]:
        responses: list[EncodedDeltaResponse] = []
        for type_url in PUSH_ORDER:
            state = self.types[type_url]
            if not state.requested:
                continue
            if changes is None:
                candidates: set[str] = set(self._all_names(type_url)) | set(state.sent.names())
            else:
                candidates = set(changes.get(type_url, ()))
            force: Set[str] = frozenset()
            if type_url == ENDPOINT and self._rewarm:
                candidates |= self._rewarm
                force = set(self._rewarm)
            responses += self._respond(type_url, candidates, force=force, piggyback=state.unconfirmed)
        return responses

    def _respond(
        self,
        type_url: str,
        candidates: Iterable[str],
        *,
        force: Set[str] = frozenset(),
        newly_named: Set[str] = frozenset(),
        piggyback: Set[str] = frozenset(),
    ) -> list[EncodedDeltaResponse]:
        """A response for what differs among `candidates` (or an empty one the node is owed).

        `force` names are sent even at the version the node has; `piggyback` names (see
        DeltaTypeState.unconfirmed) likewise, but only along with something else.
        """
        view, state = self.view, self.types[type_url]
        if view is None or not state.requested:
            return []
        candidates = candidates if isinstance(candidates, (set, frozenset)) else set(candidates)
        if not candidates and not state.answer_owed:
            return []  # an ACK: nothing to answer (`force` names are among the candidates)
        if type_url == ENDPOINT:
            # Endpoints the node does not ask for need no warming.
            self._rewarm = {n for n in self._rewarm if state.subscribed(n)}
        resources: list[Resource] = []
        removed: list[str] = []
        answered: dict[str, str | None] = {}
        for name in sorted(candidates):
            if not state.subscribed(name):
                continue
            desired = view.get(type_url, name)
            if desired is not None:
                previous = state.sent.get(name)
                if previous != desired.version or name in force:
                    resources.append(desired)
                    answered[name] = desired.version
                    state.sent.set(name, desired.version)
                    if type_url == CLUSTER and previous is not None:
                        self._rewarm.update(desired.references.get(ENDPOINT, ()))
            elif view.keeps(type_url, name):
                continue  # retained: the node keeps what it has until its routing moved on
            elif state.sent.has(name) or name in newly_named:
                # Gone, or asked for and never existed: the node learns it does not exist.
                removed.append(name)
                state.sent.drop(name)
                answered[name] = None
        if (resources or removed) and piggyback:
            for name in sorted(piggyback - answered.keys()):
                desired = view.get(type_url, name)
                if desired is not None and state.subscribed(name):
                    resources.append(desired)
                    answered[name] = desired.version
                    state.sent.set(name, desired.version)
                elif desired is None and not view.keeps(type_url, name) and state.acked.has(name):
                    # A removal the node rejected along with the rest: it may still have the resource.
                    removed.append(name)
                    answered[name] = None
            state.unconfirmed.clear()
        if not resources and not removed and not state.answer_owed:
            return []
        state.answer_owed = False
        response = EncodedDeltaResponse(
            system_version_info=str(view.snapshot.revision),
            type_url=type_url,
            resources=resources,
            removed_resources=removed,
            nonce=self._next_nonce(),
            bodies=self._bodies,
        )
        state.pending[response.nonce] = answered
        if type_url == ENDPOINT:
            self._rewarm.difference_update(answered)
        self.counters.responses += 1
        self.counters.resources_sent += len(resources)
        return [response]

    # -- tracking what the node applied ------------------------------------------------------------

    def _view_changed(self, old: DesiredView | None, changes: Changes | None) -> None:
        view = self.view
        assert view is not None
        snapshot = view.snapshot
        for type_url, state in self.types.items():
            names: Set[str] | None = None
            if changes is not None:
                names = changes.get(type_url, frozenset())
                old_retained = old.retained.get(type_url, {}) if old is not None else {}
                new_retained = view.retained.get(type_url, {})
                if old_retained or new_retained:
                    names = names | old_retained.keys() | new_retained.keys()
            if old is None or old.snapshot is not snapshot:
                # Same node content, expressed against the new snapshot.
                base = snapshot.entries(type_url)
                state.sent.rebase(base, names)
                state.acked.rebase(base, names)
                # Envoy asks for the endpoints and routes the resources it has refer to.
                named = snapshot.referenced(type_url) if type_url not in WILDCARD_TYPES else {}
                state.names.rebase(named, names)
            if names is None:
                state.mismatch.clear()
                self._touch(type_url, set(self._all_names(type_url)) | set(state.acked.names()))
            elif names:
                self._touch(type_url, names)

    def _touch(self, type_url: str, names: Iterable[str]) -> None:
        view, state = self.view, self.types[type_url]
        if view is None:
            return
        refusals = self.rejected.get(type_url, {})
        excused = self._excused().get(type_url, set()) if self.rejected else set()
        had_mismatch = bool(state.mismatch)
        for name in names:
            desired = view.get(type_url, name)
            acked = state.acked.get(name)
            refused = refusals.get(name) if refusals else None
            if desired is not None:
                # A version the node refused is answered all the same.
                wrong = (
                    view.is_required(type_url, name)
                    and name not in excused
                    and acked != desired.version
                    and (refused is None or refused.version != desired.version)
                )
            else:
                # So is a removal it refused: it keeps what it has.
                wrong = (
                    acked is not None
                    and not view.keeps(type_url, name)
                    and (refused is None or refused.version is not None)
                )
            if wrong:
                state.mismatch.add(name)
            else:
                state.mismatch.discard(name)
        if had_mismatch and not state.mismatch:
            state.mismatch = set()  # a set does not shrink as it empties

    def _refusals_changed(self, changed: Iterable[Rejection]) -> None:
        for type_url, names in self._references_of(changed).items():
            self._touch(type_url, names)

    def _all_names(self, type_url: str) -> Iterable[str]:
        view = self.view
        return view.names(type_url) if view is not None else ()

    def _node_clusters(self, candidates: Iterable[str] | None) -> set[str]:
        sent = self.types[CLUSTER].sent
        if candidates is None:
            return set(sent.names())
        return {name for name in candidates if sent.has(name)}

    def _pending_types(self) -> set[str]:
        return {t for t, state in self.types.items() if state.pending}

    def _routing_settled(self) -> bool:
        """Every routing response answered; a refused resource holds the routing only if the node had
        an earlier version of it (one it never had routes nothing)."""
        for type_url in ROUTING_TYPES:
            state = self.types[type_url]
            if state.pending:
                return False
            for name in state.unconfirmed:
                refused = self._refused(type_url, name)
                if refused is None or refused.version is None or state.acked.has(name):
                    return False
        return True

    def _applied(self) -> bool:
        for type_url, state in self.types.items():
            if state.mismatch:
                return False
            if type_url in _ALWAYS_SUBSCRIBED and not (state.requested and state.answered_once):
                return False
        return True

    def differences(self) -> int:
        """Per-name entries this stream holds beyond the shared snapshot (for memory checks)."""
        return sum(
            s.sent.differences + s.acked.differences + s.names.differences + len(s.mismatch)
            for s in self.types.values()
        )

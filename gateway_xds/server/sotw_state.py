"""The State-of-the-World protocol of one ADS stream, without I/O.

Every response carries all the resources of its type the node subscribes to, and one version for
the type; a type is re-sent only when its version or the node's subscription changes. A NACKed
response was applied but for the resources Envoy names in its message (rejections.py): the type is
answered at that version, and the named resources are the node's rejections of the type until it
next answers one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2

from gateway_xds.cache.snapshot import Changes
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, ROUTING_TYPES, WILDCARD_TYPES
from gateway_xds.server.protocol import StreamProtocol
from gateway_xds.server.reporter import SyncReporter
from gateway_xds.server.view import DesiredView

log = logging.getLogger(__name__)

# A response with more resources than this is "bulk" (see StreamProtocol.expects_bulk).
BULK_RESOURCES = 1000
# Envoy always subscribes to these (bootstrap cds_config and lds_config); other types only count
# for "applied" when the view has something of them.
_ALWAYS_SUBSCRIBED = (CLUSTER, LISTENER)


@dataclass(frozen=True)
class Subscription:
    wildcard: bool
    names: frozenset[str]

    @classmethod
    def of(cls, request: discovery_pb2.DiscoveryRequest) -> Subscription:
        names = frozenset(request.resource_names)
        if request.type_url in WILDCARD_TYPES and (not names or "*" in names):
            return cls(wildcard=True, names=names - {"*"})
        return cls(wildcard=False, names=names)


@dataclass
class TypeState:
    """Where one resource type stands on the stream."""

    subscription: Subscription | None = None  # None until the node asks for the type
    node_version: str = ""  # the version the node said it has when the stream opened
    nonce: str = ""
    answered: bool = True  # whether the node answered the response of `nonce`
    sent_version: str | None = None
    sent_subscription: Subscription | None = None
    sent_names: frozenset[str] = frozenset()
    acked_version: str | None = None
    acked_names: frozenset[str] = frozenset()
    nacked_version: str | None = None
    nacked_names: frozenset[str] = frozenset()
    # What the unanswered response was made from (for the versions of what the node may refuse).
    sent_view: DesiredView | None = None

    def answered_names(self, version: str) -> frozenset[str] | None:
        """The names the node answered (accepted or refused) at `version`; None if it has not."""
        if self.acked_version == version:
            return self.acked_names
        if self.answered and self.nacked_version == version == self.sent_version:
            return self.nacked_names
        return None


class SotwStreamState(StreamProtocol[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]):
    def __init__(self, node_id: str, gateway_id: str, reporter: SyncReporter) -> None:
        super().__init__(node_id, gateway_id, reporter)
        self.types: dict[str, TypeState] = {t: TypeState() for t in PUSH_ORDER}

    def expects_bulk(self, request: discovery_pb2.DiscoveryRequest) -> bool:
        view = self.view
        if view is None or request.type_url not in self.types:
            return False
        if len(request.resource_names) > BULK_RESOURCES:
            return True
        return (
            request.type_url in WILDCARD_TYPES
            and len(view.snapshot.entries(request.type_url)) > BULK_RESOURCES
        )

    def _handle(self, request: discovery_pb2.DiscoveryRequest) -> list[discovery_pb2.DiscoveryResponse]:
        state = self.types.get(request.type_url)
        if state is None:
            log.debug("node %s asked for unsupported type %s", self.node_id, request.type_url)
            return []
        if not request.response_nonce:
            # The first request of the type on this stream: what the node kept from an earlier one.
            state.node_version = request.version_info
        elif request.response_nonce == state.nonce and not state.answered:
            state.answered = True
            sent_view, state.sent_view = state.sent_view, None
            # Every response carries the whole type: what the node refused of the last one is over.
            self._accepted(request.type_url)
            if request.HasField("error_detail"):
                state.nacked_version, state.nacked_names = state.sent_version, state.sent_names
                answered = {name: _version(sent_view, request.type_url, name) for name in state.sent_names}
                message = request.error_detail.message
                self._rejected(request.type_url, state.sent_version or "", answered, message)
            else:
                self.counters.acks += 1
                state.acked_version, state.acked_names = state.sent_version, state.sent_names
        # A stale nonce is neither an ACK nor a NACK, but its subscription is still the node's latest.
        state.subscription = Subscription.of(request)
        return self._respond(request.type_url)

    def _push(
        self, changes: Changes | None, old: DesiredView | None
    ) -> list[discovery_pb2.DiscoveryResponse]:
        responses: list[discovery_pb2.DiscoveryResponse] = []
        for type_url in PUSH_ORDER:
            sent = self._respond(type_url)
            responses += sent
            if type_url == CLUSTER and sent:
                # Changed clusters warm again and need their endpoints: answer EDS even if unchanged.
                responses += self._respond(ENDPOINT, force=True)
        return responses

    def _view_changed(self, old: DesiredView | None, changes: Changes | None) -> None:
        pass

    def _node_clusters(self, candidates: Iterable[str] | None) -> set[str]:
        sent = self.types[CLUSTER].sent_names
        return set(sent) if candidates is None else {name for name in candidates if name in sent}

    def _pending_types(self) -> set[str]:
        return {t for t, state in self.types.items() if not state.answered}

    def _routing_settled(self) -> bool:
        """Every routing type answered; a refused resource holds the routing only if the node had an
        earlier version of it (one it never had routes nothing)."""
        for type_url in ROUTING_TYPES:
            state = self.types[type_url]
            if not state.answered:
                return False
            if state.acked_version == state.sent_version:
                continue
            if state.nacked_version != state.sent_version:
                return False
            if any(name in state.acked_names for name in self.rejected.get(type_url, {})):
                return False
        return True

    def _respond(self, type_url: str, force: bool = False) -> list[discovery_pb2.DiscoveryResponse]:
        view, state = self.view, self.types[type_url]
        subscription = state.subscription
        if view is None or subscription is None:
            return []
        version = view.version(type_url)
        if subscription.wildcard:
            names = frozenset(view.names(type_url))
        else:
            names = frozenset(n for n in subscription.names if view.get(type_url, n) is not None)
        if state.sent_version is None and state.node_version == version:
            # A reconnecting node already has this version: nothing to re-send.
            state.sent_version = state.acked_version = version
            state.sent_names = state.acked_names = names
            state.sent_subscription = subscription
            return []
        if not force and state.sent_version == version and state.sent_subscription == subscription:
            # Also how a NACKed version is never re-sent: it is still the view's version.
            return []
        resources = []
        for name in sorted(names):
            resource = view.get(type_url, name)
            assert resource is not None
            resources.append(resource.packed)
        response = discovery_pb2.DiscoveryResponse(
            version_info=version, resources=resources, type_url=type_url, nonce=self._next_nonce()
        )
        state.nonce, state.answered, state.sent_view = response.nonce, False, view
        state.sent_version, state.sent_subscription, state.sent_names = version, subscription, names
        self.counters.responses += 1
        self.counters.resources_sent += len(resources)
        return [response]

    def _applied(self) -> bool:
        """Every type the view needs answered at the view's version (accepted, or refused in part)."""
        view = self.view
        assert view is not None
        excused = self._excused() if self.rejected else None
        for type_url, state in self.types.items():
            answered = state.answered_names(view.version(type_url))
            if type_url in WILDCARD_TYPES:
                needed = type_url in _ALWAYS_SUBSCRIBED or next(view.names(type_url), None) is not None
                if needed and answered is None:
                    return False
                continue
            required = {n for n in view.snapshot.required_names(type_url)} | {
                n for n in view.retained.get(type_url, {}) if view.is_required(type_url, n)
            }
            required -= excused.get(type_url, set()) if excused is not None else set()
            if not required:
                continue
            if answered is None or not required <= answered:
                return False
        return True


def _version(view: DesiredView | None, type_url: str, name: str) -> str | None:
    resource = view.get(type_url, name) if view is not None else None
    return resource.version if resource is not None else None

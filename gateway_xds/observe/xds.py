"""What the xDS server did for each gateway, for the metrics endpoint: connected Envoys, NACKs, and
how long Envoys took from a snapshot's publication to their ACK of it.

A SyncReporter that counts and passes every report on to the next one."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway_xds.server.reporter import Rejection, SyncReporter

# Seconds: an Envoy next to the control plane ACKs in milliseconds; one far away, or a throttled
# push (server/throttle.py), in a second or more.
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Revisions remembered per gateway: an Envoy that ACKs an older one is counted from its own.
REMEMBERED_REVISIONS = 64


@dataclass
class LatencyHistogram:
    bounds: tuple[float, ...] = ACK_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(ACK_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if seconds <= bound), len(self.bounds))
        self.counts[index] += 1
        self.total += seconds


@dataclass
class GatewayXds:
    connected: set[str] = field(default_factory=set)
    nacks: int = 0
    ack_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    published: OrderedDict[int, float] = field(default_factory=OrderedDict)
    # node id -> the last revision whose ACK was timed
    timed: dict[str, int] = field(default_factory=dict)


class XdsObserver:
    def __init__(self, then: SyncReporter, clock: Callable[[], float] = time.monotonic) -> None:
        self._then = then
        self._clock = clock
        self.gateways: dict[str, GatewayXds] = {}

    def _gateway(self, gateway_id: str) -> GatewayXds:
        return self.gateways.setdefault(gateway_id, GatewayXds())

    def published(self, gateway_id: str, revision: int) -> None:
        """The snapshot cache holds `revision` for the gateway from now on."""
        published = self._gateway(gateway_id).published
        published[revision] = self._clock()
        while len(published) > REMEMBERED_REVISIONS:
            published.popitem(last=False)

    def forget(self, gateway_id: str) -> None:
        gateway = self.gateways.get(gateway_id)
        if gateway is not None and not gateway.connected:
            del self.gateways[gateway_id]

    def connected(self, node_id: str, gateway_id: str) -> None:
        self._gateway(gateway_id).connected.add(node_id)
        self._then.connected(node_id, gateway_id)

    def disconnected(self, node_id: str, gateway_id: str) -> None:
        gateway = self._gateway(gateway_id)
        gateway.connected.discard(node_id)
        gateway.timed.pop(node_id, None)
        self._then.disconnected(node_id, gateway_id)

    def acked(self, node_id: str, gateway_id: str, revision: int) -> None:
        gateway = self._gateway(gateway_id)
        at = gateway.published.get(revision)
        if at is not None and gateway.timed.get(node_id) != revision:
            gateway.timed[node_id] = revision
            gateway.ack_latency.observe(max(0.0, self._clock() - at))
        self._then.acked(node_id, gateway_id, revision)

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        self._gateway(gateway_id).nacks += 1
        self._then.rejected(node_id, gateway_id, type_url, version, message)

    def rejections(self, node_id: str, gateway_id: str, rejected: tuple[Rejection, ...]) -> None:
        self._then.rejections(node_id, gateway_id, rejected)

"""The Aggregated Discovery Service: State-of-the-World and Delta streams over one set of snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from functools import partial

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from gateway_xds.server.bulk_gate import BulkGate
from gateway_xds.server.delta_state import DeltaStreamState
from gateway_xds.server.encoding import EncodedDeltaResponse, ResponseBodies
from gateway_xds.server.gateway_watch import GatewayWatches
from gateway_xds.server.reporter import SyncReporter
from gateway_xds.server.sotw_state import SotwStreamState
from gateway_xds.server.stats import ServerStats
from gateway_xds.server.stream import AdsStream
from gateway_xds.server.throttle import DEFAULT_WINDOW_SECONDS, PushThrottle
from gateway_xds.server.watcher import ConfigWatcher, NodeAuthorizer

# How many streams may build bulk responses at the same time (see StreamProtocol.expects_bulk).
BULK_STREAMS = 4


class AggregatedDiscoveryServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]  # xds-protos is untyped
    def __init__(
        self,
        watcher: ConfigWatcher,
        authorizer: NodeAuthorizer,
        reporter: SyncReporter,
        stats: ServerStats | None = None,
        push_window: float = DEFAULT_WINDOW_SECONDS,
    ) -> None:
        self._watches = GatewayWatches(watcher)
        self._authorizer = authorizer
        self._reporter = reporter
        self.stats = stats if stats is not None else ServerStats()
        self._push_window = push_window
        # Streams building a node's first sync of a large type at once (each holds its responses).
        self._bulk_gate = BulkGate(BULK_STREAMS)
        self._delta_state = partial(DeltaStreamState, bodies=ResponseBodies())

    async def StreamAggregatedResources(
        self,
        request_iterator: AsyncIterable[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse],
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = AdsStream(
            "sotw", SotwStreamState, self._watches, self._authorizer, self._reporter, self.stats,
            PushThrottle(self._push_window), self._bulk_gate, context,
        )  # fmt: skip
        async for response in stream.run(request_iterator):
            yield response
            del response  # not kept while the stream waits for its next response

    async def DeltaAggregatedResources(
        self,
        request_iterator: AsyncIterable[discovery_pb2.DeltaDiscoveryRequest],
        context: grpc.aio.ServicerContext[discovery_pb2.DeltaDiscoveryRequest, EncodedDeltaResponse],
    ) -> AsyncIterator[EncodedDeltaResponse]:
        stream = AdsStream(
            "delta", self._delta_state, self._watches, self._authorizer, self._reporter, self.stats,
            PushThrottle(self._push_window), self._bulk_gate, context,
        )  # fmt: skip
        async for response in stream.run(request_iterator):
            yield response
            del response  # not kept while the stream waits for its next response

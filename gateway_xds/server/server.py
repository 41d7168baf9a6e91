"""Build the gRPC server that serves ADS, health checking and reflection, and whatever else Envoys
call on the same cluster (ext_authz, their stats)."""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import grpc
from envoy.service.discovery.v3 import ads_pb2, discovery_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gatehouse.limits import GRPC_MESSAGE_BYTES
from gateway_xds.server.ads import AggregatedDiscoveryServicer
from gateway_xds.server.encoding import EncodedDeltaResponse
from gateway_xds.server.protocol import Encodable
from gateway_xds.server.reporter import SyncReporter
from gateway_xds.server.stats import ServerStats
from gateway_xds.server.throttle import DEFAULT_WINDOW_SECONDS
from gateway_xds.server.watcher import ConfigWatcher, NodeAuthorizer

ADS_SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name

# Envoy's side is raised to the same in the bootstrap (envoy_grpc.max_receive_message_length).

# Envoys ping us: the bootstrap's connection_keepalive (gatehouse/envoy_bootstrap.py) sends
# an HTTP/2 PING every 15 s, on a connection that can stay without any data for hours (an idle
# gateway's ADS stream). gRPC core counts a received ping as a strike when it comes sooner than this
# after the previous one with no data sent in between, and after `grpc.http2.max_ping_strikes`
# (default 2) answers GOAWAY ENHANCE_YOUR_CALM "too_many_pings", which cancels every stream of the
# connection (every xDS stream of that Envoy). The default is 5 minutes: without this option an idle
# Envoy would lose its streams at its 4th ping, about once a minute. The knob's C name is
# GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, but its string is the one below; a
# "grpc.http2.min_recv_ping_interval_without_data_ms" would be silently ignored. Far below Envoy's
# interval, so that a late ping followed by a prompt one never adds strikes that nothing resets; a
# flood (many pings a second) is still answered with GOAWAY.
MIN_RECV_PING_INTERVAL_MS = 500
# Our own pings, to notice an Envoy that went away without closing its connection: every 30 s, dead
# after 10 s without the answer, and go on pinging a connection that carries no data (0: no limit).
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
UNREQUESTED_CALL_SECONDS = 600

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES),
    # Without this a second server silently shares an address already in use.
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_RECV_PING_INTERVAL_MS),
    # A connection with no call open (an Envoy's ext_authz or stats connection between calls) may be
    # pinged too; without this gRPC core allows one ping per 2 hours there.
    ("grpc.keepalive_permit_without_calls", 1),
    # gRPC core cancels a call that the application has not picked up within 30 s. When many Envoys
    # connect at once (a new fleet, a control plane restart) the event loop takes new streams only
    # between other nodes' first syncs, and an Envoy would rather wait than start again at the back.
    ("grpc.server_max_unrequested_time_in_server", UNREQUESTED_CALL_SECONDS),
)


def _serialize(response: Encodable) -> bytes:
    if isinstance(response, EncodedDeltaResponse):
        return response.take()
    return response.SerializeToString()


def _add_ads(ads: AggregatedDiscoveryServicer, server: grpc.aio.Server) -> None:
    """What ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server does, with a serializer that
    also takes responses encoded already (Delta responses are, see encoding.py)."""
    handlers = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            ads.StreamAggregatedResources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=_serialize,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            ads.DeltaAggregatedResources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_serialize,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ADS_SERVICE, handlers),))
    server.add_registered_method_handlers(ADS_SERVICE, handlers)


class ExtraService(NamedTuple):
    """Another gRPC service on the xDS port."""

    name: str  # its full name, for reflection
    register: Callable[[grpc.aio.Server], None]


class XdsServer(NamedTuple):
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    stats: ServerStats

    async def start(self) -> None:
        await self.server.start()
        await self.health.set(ADS_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def build_xds_server(
    watcher: ConfigWatcher,
    authorizer: NodeAuthorizer,
    reporter: SyncReporter,
    address: str = "127.0.0.1:0",
    credentials: grpc.ServerCredentials | None = None,
    push_window: float = DEFAULT_WINDOW_SECONDS,
    services: Sequence[ExtraService] = (),
) -> XdsServer:
    """A bound, not yet started server; `address` may use port 0, the bound port is returned.

    Raises RuntimeError (from gRPC) when the address cannot be bound, e.g. when it is in use.
    """
    server = grpc.aio.server(options=SERVER_OPTIONS)
    ads = AggregatedDiscoveryServicer(watcher, authorizer, reporter, push_window=push_window)
    _add_ads(ads, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    for service in services:
        service.register(server)
    names = (ADS_SERVICE, health_service, *(s.name for s in services), reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    return XdsServer(server=server, port=port, health=health_servicer, stats=ads.stats)

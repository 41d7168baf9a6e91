"""The xDS server's keepalive options fit the pings of the Envoys it serves."""

from google.protobuf import duration_pb2

from gatehouse.envoy_bootstrap import HTTP_PROTOCOL_OPTIONS, BootstrapParams, render_bootstrap
from gateway_xds.server.server import SERVER_OPTIONS

# gRPC core's string for GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS.
MIN_RECV_PING_INTERVAL = "grpc.http2.min_ping_interval_without_data_ms"


def envoy_ping_interval_ms() -> int:
    bootstrap = render_bootstrap(BootstrapParams("gw", 0, "127.0.0.1", 50052))
    (cluster,) = bootstrap["static_resources"]["clusters"]
    http2 = cluster["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS]["explicit_http_config"]
    interval = duration_pb2.Duration()
    interval.FromJsonString(http2["http2_protocol_options"]["connection_keepalive"]["interval"])
    return int(interval.ToMilliseconds())


def test_envoys_pings_are_well_above_the_servers_minimum() -> None:
    options = dict(SERVER_OPTIONS)
    # gRPC ignores names it does not know: only this one sets the minimum for received pings.
    assert not [name for name in options if "recv_ping" in name]
    assert options[MIN_RECV_PING_INTERVAL] * 4 <= envoy_ping_interval_ms()
    assert options["grpc.keepalive_permit_without_calls"] == 1
    # Our own pings go on over a connection that carries no data.
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.keepalive_time_ms"] >= 10_000

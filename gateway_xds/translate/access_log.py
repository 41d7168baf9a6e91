"""Every request of a service listener is logged to gateway_xds over gRPC ALS (batched by Envoy),
with no header; gateway_xds/observe/access_logs.py takes the stream."""

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from gatehouse import access_logs
from gateway_xds.translate.config_source import control_plane_service, milliseconds, pack

HTTP_GRPC_LOGGER = "envoy.access_loggers.http_grpc"
# No runtime layer sets it: the configured share applies.
SAMPLE_RUNTIME_KEY = "gatehouse.access_log_percent"


def access_log(cluster: str, percent: int = 100) -> accesslog_pb2.AccessLog:
    """`percent` < 100: each request is logged with that chance, decided before the entry is made."""
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=access_logs.LOG_NAME,
            grpc_service=control_plane_service(cluster),
            transport_api_version=config_source_pb2.V3,
            buffer_flush_interval=milliseconds(access_logs.FLUSH_INTERVAL_MS),
            buffer_size_bytes=wrappers_pb2.UInt32Value(value=access_logs.BUFFER_BYTES),
        )
    )
    logged = accesslog_pb2.AccessLog(name=HTTP_GRPC_LOGGER, typed_config=pack(config))
    if percent < 100:
        sampled = percent_pb2.FractionalPercent(
            numerator=percent, denominator=percent_pb2.FractionalPercent.HUNDRED
        )
        logged.filter.runtime_filter.CopyFrom(
            accesslog_pb2.RuntimeFilter(
                runtime_key=SAMPLE_RUNTIME_KEY, percent_sampled=sampled, use_independent_randomness=True
            )
        )
    return logged

"""Every request of a service listener may be logged to gateway_xds over gRPC ALS (batched by Envoy),
with no header; gateway_xds/observe/access_logs.py takes the stream.

Errors are always logged; successes with the share the runtime value SUCCESS_SHARE_KEY says, which
gateway_xds sets per Envoy over RTDS (gateway_xds/observe/runtime_service.py), so the share changes
under load without touching the listener. Until a value arrives, `percent` applies."""

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from gatehouse import access_logs
from gateway_xds.translate.config_source import control_plane_service, milliseconds, pack

HTTP_GRPC_LOGGER = "envoy.access_loggers.http_grpc"


def _logged_filter(percent: int) -> accesslog_pb2.AccessLogFilter:
    """An error status, any response flag (no upstream, upstream failure, reset...) or the sampled
    share of the rest."""
    errors = accesslog_pb2.StatusCodeFilter(
        comparison=accesslog_pb2.ComparisonFilter(
            op=accesslog_pb2.ComparisonFilter.GE,
            value=base_pb2.RuntimeUInt32(
                default_value=access_logs.FIRST_ERROR_STATUS, runtime_key=access_logs.ERROR_STATUS_KEY
            ),
        )
    )
    sampled = accesslog_pb2.RuntimeFilter(
        runtime_key=access_logs.SUCCESS_SHARE_KEY,
        percent_sampled=percent_pb2.FractionalPercent(
            numerator=access_logs.share_numerator(percent), denominator=percent_pb2.FractionalPercent.MILLION
        ),
        use_independent_randomness=True,
    )
    return accesslog_pb2.AccessLogFilter(
        or_filter=accesslog_pb2.OrFilter(
            filters=[
                accesslog_pb2.AccessLogFilter(status_code_filter=errors),
                accesslog_pb2.AccessLogFilter(response_flag_filter=accesslog_pb2.ResponseFlagFilter()),
                accesslog_pb2.AccessLogFilter(runtime_filter=sampled),
            ]
        )
    )


def access_log(cluster: str, percent: int = 100) -> accesslog_pb2.AccessLog:
    """`percent`: the most of the successful requests logged (errors are all logged)."""
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=access_logs.LOG_NAME,
            grpc_service=control_plane_service(cluster),
            transport_api_version=config_source_pb2.V3,
            buffer_flush_interval=milliseconds(access_logs.FLUSH_INTERVAL_MS),
            buffer_size_bytes=wrappers_pb2.UInt32Value(value=access_logs.BUFFER_BYTES),
        )
    )
    return accesslog_pb2.AccessLog(
        name=HTTP_GRPC_LOGGER, typed_config=pack(config), filter=_logged_filter(percent)
    )

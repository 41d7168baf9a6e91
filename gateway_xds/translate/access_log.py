"""Every request of a service listener is logged to gateway_xds over gRPC ALS (batched by Envoy),
with no header; gateway_xds/observe/access_logs.py takes the stream."""

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2
from google.protobuf import wrappers_pb2

from gatehouse import access_logs
from gateway_xds.translate.config_source import control_plane_service, milliseconds, pack

HTTP_GRPC_LOGGER = "envoy.access_loggers.http_grpc"


def access_log(cluster: str) -> accesslog_pb2.AccessLog:
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=access_logs.LOG_NAME,
            grpc_service=control_plane_service(cluster),
            transport_api_version=config_source_pb2.V3,
            buffer_flush_interval=milliseconds(access_logs.FLUSH_INTERVAL_MS),
            buffer_size_bytes=wrappers_pb2.UInt32Value(value=access_logs.BUFFER_BYTES),
        )
    )
    return accesslog_pb2.AccessLog(name=HTTP_GRPC_LOGGER, typed_config=pack(config))

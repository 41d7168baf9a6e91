"""What Envoy itself answers: short plain-text bodies a person can read."""

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import wrappers_pb2

NO_READY_REPLICAS_BODY = "service unavailable: no ready replicas\n"
NO_SERVICE_BODY = "not found: no service here\n"


def local_reply_config() -> hcm.LocalReplyConfig:
    return hcm.LocalReplyConfig(
        mappers=[
            # UH: the cluster has no healthy endpoint, e.g. a service with zero ready replicas.
            _mapper("UH", 503, NO_READY_REPLICAS_BODY),
            # NR: no route, i.e. no service for this host or port.
            _mapper("NR", 404, NO_SERVICE_BODY),
        ]
    )


def _mapper(flag: str, status: int, body: str) -> hcm.ResponseMapper:
    return hcm.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=[flag])
        ),
        status_code=wrappers_pb2.UInt32Value(value=status),
        body=base_pb2.DataSource(inline_string=body),
    )

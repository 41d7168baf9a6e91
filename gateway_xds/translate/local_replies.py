"""What Envoy itself answers: short plain-text bodies a person can read."""

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import wrappers_pb2

NO_READY_REPLICAS_BODY = "service unavailable: no ready replicas\n"
NO_SERVICE_BODY = "not found: no service here\n"
# The auth check could not be made (the control plane is restarting): worth trying again shortly.
CHECK_UNAVAILABLE_RETRY_AFTER_SECONDS = 1


def local_reply_config() -> hcm.LocalReplyConfig:
    return hcm.LocalReplyConfig(
        mappers=[
            # UH: the cluster has no healthy endpoint, e.g. a service with zero ready replicas.
            _mapper(_flag("UH"), status=503, body=NO_READY_REPLICAS_BODY),
            # NR: no route, i.e. no service for this host or port.
            _mapper(_flag("NR"), status=404, body=NO_SERVICE_BODY),
            # UAEX and 503: the auth check failed closed (or answered that it cannot decide yet).
            _mapper(_both(_flag("UAEX"), _status(503)), retry_after=CHECK_UNAVAILABLE_RETRY_AFTER_SECONDS),
        ]
    )


def _mapper(
    match: accesslog_pb2.AccessLogFilter, status: int = 0, body: str = "", retry_after: int = 0
) -> hcm.ResponseMapper:
    mapper = hcm.ResponseMapper(filter=match)
    if status:
        mapper.status_code.CopyFrom(wrappers_pb2.UInt32Value(value=status))
    if body:
        mapper.body.CopyFrom(base_pb2.DataSource(inline_string=body))
    if retry_after:
        header = base_pb2.HeaderValue(key="retry-after", value=str(retry_after))
        overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
        mapper.headers_to_add.append(base_pb2.HeaderValueOption(header=header, append_action=overwrite))
    return mapper


def _flag(flag: str) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=[flag]))


def _status(code: int) -> accesslog_pb2.AccessLogFilter:
    comparison = accesslog_pb2.ComparisonFilter(
        op=accesslog_pb2.ComparisonFilter.EQ,
        value=base_pb2.RuntimeUInt32(default_value=code, runtime_key=f"gatehouse.local_reply.status_{code}"),
    )
    return accesslog_pb2.AccessLogFilter(
        status_code_filter=accesslog_pb2.StatusCodeFilter(comparison=comparison)
    )


def _both(*filters: accesslog_pb2.AccessLogFilter) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(and_filter=accesslog_pb2.AndFilter(filters=list(filters)))

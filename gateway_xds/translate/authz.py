"""Auth at the gateway: for a virtual host that needs it, Envoy asks the control plane's ext_authz
server about each request (answered from memory, see gateway_xds/authz), telling it which service the
request is for. Everything else (ACME answers, redirects to HTTPS, services without auth) skips it.
"""

from typing import Any

from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import http_status_pb2

from gateway_xds.authz.credentials import PROJECT, SERVICE_ID
from gateway_xds.ir.policies import Authorization
from gateway_xds.translate.config_source import milliseconds, pack

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
# The check is a dictionary look-up at the control plane; this bounds a slow network.
CHECK_TIMEOUT_MS = 1000


def ext_authz_filter(cluster: str) -> ext_authz_pb2.ExtAuthz:
    return ext_authz_pb2.ExtAuthz(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster),
            timeout=milliseconds(CHECK_TIMEOUT_MS),
        ),
        transport_api_version=config_source_pb2.V3,
        # Closed when the check cannot be made: 503, not a request let through.
        failure_mode_allow=False,
        status_on_error=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
        # The credential is all the check needs; nothing else of the request leaves Envoy.
        allowed_headers=string_pb2.ListStringMatcher(
            patterns=[string_pb2.StringMatcher(exact="authorization")]
        ),
    )


def authorization_config(authorization: Authorization | None) -> dict[str, Any]:
    """A virtual host's per-filter config: checked as its service, or not at all."""
    if authorization is None:
        return without_authorization()
    settings = ext_authz_pb2.CheckSettings(
        context_extensions={PROJECT: authorization.project, SERVICE_ID: authorization.service_id}
    )
    return {EXT_AUTHZ_FILTER: pack(ext_authz_pb2.ExtAuthzPerRoute(check_settings=settings))}


def without_authorization() -> dict[str, Any]:
    return {EXT_AUTHZ_FILTER: pack(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))}

"""What the auth check answers Envoy: let through (as a principal), or refuse with a short JSON body."""

from __future__ import annotations

import json

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from gateway_xds.authz.credentials import PRINCIPAL_HEADER
from gateway_xds.ratelimit.buckets import retry_after_seconds

# Loading the credentials takes well under a second.
LOADING_RETRY_AFTER_SECONDS = 1

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
    )


def _refused(
    status: http_status_pb2.StatusCode.ValueType,
    error: str,
    message: str,
    *headers: base_pb2.HeaderValueOption,
) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=[_header("content-type", "application/json"), *headers],
            body=json.dumps({"error": error, "message": message}),
        ),
    )


def unauthorized(reason: str) -> external_auth_pb2.CheckResponse:
    challenge = _header("www-authenticate", 'Bearer realm="gatehouse"')
    return _refused(http_status_pb2.Unauthorized, "unauthorized", reason, challenge)


def too_many_unauthenticated(wait: float) -> external_auth_pb2.CheckResponse:
    retry_after = _header("retry-after", str(retry_after_seconds(wait)))
    message = "too many requests without a valid credential"
    return _refused(http_status_pb2.TooManyRequests, "rate_limited", message, retry_after)


def loading() -> external_auth_pb2.CheckResponse:
    """The credential cannot be checked yet (the control plane has just started): not a 401."""
    retry_after = _header("retry-after", str(LOADING_RETRY_AFTER_SECONDS))
    message = "the gateway is loading its credentials; retry shortly"
    return _refused(http_status_pb2.ServiceUnavailable, "unavailable", message, retry_after)


def allowed(principal: str) -> external_auth_pb2.CheckResponse:
    """The Gatehouse credential is removed; the principal is set (replacing any the client sent)."""
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[_header(PRINCIPAL_HEADER, principal)], headers_to_remove=["authorization"]
        ),
    )


def passed() -> external_auth_pb2.CheckResponse:
    """The request goes on unchanged (whether or not a replica came up: without one, Envoy's 503)."""
    return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))

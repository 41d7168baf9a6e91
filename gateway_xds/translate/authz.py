"""Checks Envoy asks the control plane about, on the cluster it fetches xDS from (ext_authz):

* auth: for a virtual host that needs it, each request (answered from memory, see gateway_xds/authz),
  telling it which service the request is for and, under a rate-limited prefix, the rule, which
  limits the requests that fail the check. What it lets through carries the principal it found
  (PRINCIPAL_HEADER), which the rate limits after it count by. Everything else (ACME answers,
  redirects to HTTPS, services without auth) skips it.
* wake: a second ext_authz instance, off unless a virtual host turns it on, for services scaled to
  zero: the answer comes once a replica is up and routable, so the request waits instead of getting
  503. If the control plane cannot be asked, the request goes on (and meets the 503).
"""

from collections.abc import Mapping
from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import http_status_pb2

from gateway_xds.authz.credentials import PROJECT, SERVICE_ID, WAKE_SERVICE_ID
from gateway_xds.ir.policies import WAKE_HOLD_SECONDS, Authorization, ScaleFromZero
from gateway_xds.translate.config_source import control_plane_service, pack

EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
WAKE_FILTER = "gatehouse.scale_from_zero"
# The check is a dictionary look-up at the control plane; this bounds a slow network.
CHECK_TIMEOUT_MS = 1000
# The control plane answers when the hold runs out; this is only in case it does not.
WAKE_CHECK_TIMEOUT_MS = int(WAKE_HOLD_SECONDS * 1000) + 5000


def ext_authz_filter(cluster: str) -> ext_authz_pb2.ExtAuthz:
    return ext_authz_pb2.ExtAuthz(
        grpc_service=control_plane_service(cluster, CHECK_TIMEOUT_MS),
        transport_api_version=config_source_pb2.V3,
        # Closed when the check cannot be made: 503, not a request let through.
        failure_mode_allow=False,
        status_on_error=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
        # The credential is all the check needs; nothing else of the request leaves Envoy.
        allowed_headers=string_pb2.ListStringMatcher(
            patterns=[string_pb2.StringMatcher(exact="authorization")]
        ),
    )


def wake_filter(cluster: str) -> ext_authz_pb2.ExtAuthz:
    return ext_authz_pb2.ExtAuthz(
        grpc_service=control_plane_service(cluster, WAKE_CHECK_TIMEOUT_MS),
        transport_api_version=config_source_pb2.V3,
        failure_mode_allow=True,
        # The service is all the wake server needs to know.
        allowed_headers=string_pb2.ListStringMatcher(
            patterns=[string_pb2.StringMatcher(exact="x-gatehouse-wake")]
        ),
    )


def check_config(
    authorization: Authorization | None, scale_from_zero: ScaleFromZero | None
) -> dict[str, Any]:
    """A virtual host's per-filter config: checked as its service or not at all, and woken or not."""
    config = without_checks()
    if authorization is not None:
        config.update(auth_check(authorization))
    if scale_from_zero is not None:
        settings = ext_authz_pb2.CheckSettings(
            context_extensions={PROJECT: scale_from_zero.project, WAKE_SERVICE_ID: scale_from_zero.service_id}
        )
        config[WAKE_FILTER] = pack(ext_authz_pb2.ExtAuthzPerRoute(check_settings=settings))
    return config


def auth_check(authorization: Authorization, rule: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Checked as its service; on a rate-limited route, under its `rule` (translate/rate_limits.py)."""
    context = {PROJECT: authorization.project, SERVICE_ID: authorization.service_id, **(rule or {})}
    settings = ext_authz_pb2.CheckSettings(context_extensions=context)
    return {EXT_AUTHZ_FILTER: pack(ext_authz_pb2.ExtAuthzPerRoute(check_settings=settings))}


def without_checks() -> dict[str, Any]:
    """Neither auth nor wake: for ACME answers, redirects, and services open to anyone."""
    disabled = pack(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))
    return {EXT_AUTHZ_FILTER: disabled, WAKE_FILTER: disabled}

"""Which checks a virtual host's requests go through:

* auth, for a virtual host that needs it: by Envoy itself (translate/host_auth.py). Everything else
  (ACME answers, redirects to HTTPS, the refusals, services without auth) skips it.
* wake: an ext_authz instance, off unless a virtual host turns it on, for services scaled to zero,
  asking the control plane on the cluster it fetches xDS from: the answer comes once a replica is up
  and routable, so the request waits instead of getting 503. If the control plane cannot be asked,
  the request goes on (and meets the 503).
"""

from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.type.matcher.v3 import string_pb2

from gateway_xds.authz.context import PROJECT, WAKE_SERVICE_ID
from gateway_xds.ir.policies import WAKE_HOLD_SECONDS, Authorization, ScaleFromZero
from gateway_xds.translate.config_source import control_plane_service, pack
from gateway_xds.translate.host_auth import AUTH_CHECK_FILTER, checked_as, not_checked

WAKE_FILTER = "gatehouse.scale_from_zero"
# The control plane answers when the hold runs out; this is only in case it does not.
WAKE_CHECK_TIMEOUT_MS = int(WAKE_HOLD_SECONDS * 1000) + 5000


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
        config[AUTH_CHECK_FILTER] = checked_as(authorization)
    if scale_from_zero is not None:
        settings = ext_authz_pb2.CheckSettings(
            context_extensions={PROJECT: scale_from_zero.project, WAKE_SERVICE_ID: scale_from_zero.service_id}
        )
        config[WAKE_FILTER] = pack(ext_authz_pb2.ExtAuthzPerRoute(check_settings=settings))
    return config


def without_checks() -> dict[str, Any]:
    """Neither auth nor wake: for ACME answers, redirects, refusals, and services open to anyone."""
    disabled = pack(ext_authz_pb2.ExtAuthzPerRoute(disabled=True))
    return {AUTH_CHECK_FILTER: not_checked(), WAKE_FILTER: disabled}

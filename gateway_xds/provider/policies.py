"""A service's traffic policies as the IR has them: auth, rate limits, CORS. Pure."""

from __future__ import annotations

from gatehouse import scaling
from gatehouse.gateway_resources import XDS_CLUSTER
from gatehouse.v1 import resources_pb2
from gateway_xds.authz.credentials import CredentialTables
from gateway_xds.ir.policies import Authorization, RateLimit, RateLimitKey, ScaleFromZero

# Every gateway's bootstrap has this cluster: gateway_xds itself, which also counts shared rate
# limits and answers the wake check (gatehouse/envoy_bootstrap.py).
AUTHORIZATION_CLUSTER = XDS_CLUSTER


def authorization(
    service: resources_pb2.Service, credentials: CredentialTables | None = None
) -> Authorization | None:
    """Every service needs a credential of its project or an API key of its own, whether reached by
    name (seed 000) or by gateway port (seed 004), unless `auth: false`."""
    if not service.spec.auth:
        return None
    opening = credentials.opening(service.project, service.id) if credentials is not None else ()
    return Authorization(project=service.project, service_id=service.id, credentials=opening)


def rate_limits(service: resources_pb2.Service) -> tuple[RateLimit, ...]:
    return tuple(
        RateLimit(
            prefix=limit.prefix or "/",
            requests_per_second=limit.rps,
            burst=limit.burst,
            key=RateLimitKey.HEADER if limit.key == RateLimitKey.HEADER else RateLimitKey.IP_ADDRESS,
            header=limit.header.lower() if limit.key == RateLimitKey.HEADER else "",
            shared=limit.scope == "global",
        )
        for limit in service.spec.rate_limits
    )


def cors(service: resources_pb2.Service) -> bool:
    """Model services are called from browsers (chat front ends)."""
    return bool(service.spec.model)


def scale_from_zero(service: resources_pb2.Service, has_endpoints: bool) -> ScaleFromZero | None:
    """Requests to a service with no ready replica wait for one where the autoscaler may start one."""
    spec = service.spec
    if (
        has_endpoints
        or spec.replicas_min != 0
        or spec.replicas_max == 0
        or spec.scaling.metric not in scaling.METRICS
    ):
        return None
    return ScaleFromZero(project=service.project, service_id=service.id)

"""Rate limits: one route per limited prefix (longest first, so the longest prefix wins), and on it
one token bucket per client, created as clients appear. A refused request gets 429 with Retry-After.

On a service with auth the client is the principal the auth check let through (the header the check
sets), elsewhere the IP or header value the rule names. The rate limit filters come after the auth
check, so a request that fails it spends nobody's allowance; those are limited on their refusal
routes, per address (translate/host_auth.py).

Local limits (the default) are Envoy's local token buckets: they live in each Envoy, so a gateway
with N hosts lets a client through up to N times the rate if its requests are spread over all of
them. Shared limits (`scope: global`) are counted by the control plane for all of the gateway's
Envoys (Envoy's global rate limit filter, answered by gateway_xds/ratelimit), at the price of a
round trip per request.
"""

import math
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.ratelimit.v3 import rls_pb2 as rls_config_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2 as global_rate_limit_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import wrappers_pb2

from gateway_xds.authz.credentials import PRINCIPAL_HEADER
from gateway_xds.ir.policies import RateLimit, RateLimitKey
from gateway_xds.translate.config_source import control_plane_service, milliseconds

RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
STAT_PREFIX = "rate_limit"
# Clients with a bucket per rule; the least recently seen go first.
MAX_CLIENTS_PER_RULE = 10_000
# Envoy refills a bucket at most every 50 ms.
MIN_FILL_INTERVAL_MS = 50
# Descriptor entries that name the client (requests without the rule's header are one client).
PRINCIPAL_KEY, ADDRESS_KEY, HEADER_KEY, NO_HEADER_KEY = "principal", "remote_address", "header", "no_header"
CLIENT_KEYS = (PRINCIPAL_KEY, ADDRESS_KEY, HEADER_KEY, NO_HEADER_KEY)
_ALWAYS = percent_pb2.FractionalPercent(numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED)


@dataclass(frozen=True)
class Bucket:
    max_tokens: int
    tokens_per_fill: int
    fill_interval_ms: int

    @property
    def retry_after_seconds(self) -> int:
        """How long a refused client waits at most for its next token."""
        return max(1, math.ceil(self.fill_interval_ms / 1000))


def bucket(limit: RateLimit) -> Bucket:
    """`burst + 1` tokens at once, then `requests_per_second`: whole tokens at intervals of at least
    50 ms (one every 60 s for one request a minute, five every 50 ms for 100 a second)."""
    rps = limit.requests_per_second
    per_fill = max(1, math.ceil(rps * MIN_FILL_INTERVAL_MS / 1000))
    return Bucket(max(limit.burst + 1, per_fill), per_fill, round(per_fill * 1000 / rps))


def local_rate_limit(limit: RateLimit, authenticated: bool) -> local_rate_limit_pb2.LocalRateLimit:
    """The route's buckets: one per client (a wildcard descriptor), and one shared by requests the key
    does not apply to (a missing header). `authenticated`: the clients are principals."""
    shape = bucket(limit)
    token_bucket = token_bucket_pb2.TokenBucket(
        max_tokens=shape.max_tokens,
        tokens_per_fill=wrappers_pb2.UInt32Value(value=shape.tokens_per_fill),
        fill_interval=milliseconds(shape.fill_interval_ms),
    )
    key, action = _client(limit, authenticated)
    return local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=STAT_PREFIX,
        token_bucket=token_bucket,
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=_ALWAYS),
        filter_enforced=base_pb2.RuntimeFractionalPercent(default_value=_ALWAYS),
        response_headers_to_add=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="retry-after", value=str(shape.retry_after_seconds)),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
        rate_limits=[route_components_pb2.RateLimit(actions=[action])],
        # An entry without a value matches every value, each with a bucket of its own.
        descriptors=[
            ratelimit_pb2.LocalRateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=key)], token_bucket=token_bucket
            )
        ],
        max_dynamic_descriptors=wrappers_pb2.UInt32Value(value=MAX_CLIENTS_PER_RULE),
        always_consume_default_token_bucket=wrappers_pb2.BoolValue(value=False),
    )


def _client(limit: RateLimit, authenticated: bool) -> tuple[str, route_components_pb2.RateLimit.Action]:
    """The descriptor key that names the client, and the action that reads it from the request."""
    if authenticated:
        return PRINCIPAL_KEY, _header_action(PRINCIPAL_HEADER, PRINCIPAL_KEY)
    if limit.key is RateLimitKey.HEADER:
        return HEADER_KEY, _header_action(limit.header, HEADER_KEY)
    # The client's address as Envoy sees it at the edge (use_remote_address).
    address = route_components_pb2.RateLimit.Action.RemoteAddress()
    return ADDRESS_KEY, route_components_pb2.RateLimit.Action(remote_address=address)


def _header_action(header: str, key: str) -> route_components_pb2.RateLimit.Action:
    return route_components_pb2.RateLimit.Action(
        request_headers=route_components_pb2.RateLimit.Action.RequestHeaders(
            header_name=header, descriptor_key=key, skip_if_absent=True
        )
    )


# -- limits shared by the gateway's Envoys ---------------------------------------------------------

GLOBAL_RATE_LIMIT_FILTER = "envoy.filters.http.ratelimit"
GLOBAL_DOMAIN = "gatehouse"
# Asked on every request under a shared limit; a control plane that does not answer in time lets the
# request through rather than holding up traffic.
GLOBAL_CHECK_TIMEOUT_MS = 500
# What names a rule to gateway_xds/ratelimit: entries of a shared limit's descriptors.
RULE_KEY, RPS_KEY, BURST_KEY = "rule", "rps", "burst"
# A rule's name: `<backend><separator><prefix>`.
RULE_SEPARATOR = "|"


def global_rate_limit_filter(cluster: str) -> global_rate_limit_pb2.RateLimit:
    """The filter asks the control plane only on routes that carry shared limits."""
    return global_rate_limit_pb2.RateLimit(
        domain=GLOBAL_DOMAIN,
        timeout=milliseconds(GLOBAL_CHECK_TIMEOUT_MS),
        failure_mode_deny=False,
        rate_limit_service=rls_config_pb2.RateLimitServiceConfig(
            grpc_service=control_plane_service(cluster),
            transport_api_version=config_source_pb2.V3,
        ),
    )


def rule_entries(backend: str, limit: RateLimit) -> dict[str, str]:
    return {
        RULE_KEY: f"{backend}{RULE_SEPARATOR}{limit.prefix}",
        RPS_KEY: repr(limit.requests_per_second),
        BURST_KEY: str(limit.burst),
    }


def shared_rate_limits(
    backend: str, limit: RateLimit, authenticated: bool
) -> list[route_components_pb2.RateLimit]:
    """The descriptors of one shared rule: the rule itself (service, prefix, rate, burst) and the
    client (its principal, IP, or header value; requests without the header are one client)."""
    rule = [_generic(key, value) for key, value in rule_entries(backend, limit).items()]
    descriptors = [route_components_pb2.RateLimit(actions=[*rule, _client(limit, authenticated)[1]])]
    if limit.key is RateLimitKey.HEADER and not authenticated:
        absent = route_components_pb2.HeaderMatcher(name=limit.header, present_match=False)
        without_header = route_components_pb2.RateLimit.Action(
            header_value_match=route_components_pb2.RateLimit.Action.HeaderValueMatch(
                descriptor_key=NO_HEADER_KEY,
                descriptor_value="1",
                expect_match=wrappers_pb2.BoolValue(value=True),
                headers=[absent],
            )
        )
        descriptors.append(route_components_pb2.RateLimit(actions=[*rule, without_header]))
    return descriptors


def _generic(key: str, value: str) -> route_components_pb2.RateLimit.Action:
    return route_components_pb2.RateLimit.Action(
        generic_key=route_components_pb2.RateLimit.Action.GenericKey(
            descriptor_key=key, descriptor_value=value
        )
    )

"""Rate limits as Envoy's local token buckets: one route per limited prefix (longest first, so the
longest prefix wins), and on it one bucket per client IP or header value, created as clients appear.
A refused request gets 429 with Retry-After.

Buckets live in each Envoy: a gateway with N hosts lets a client through up to N times the rate if
its requests are spread over all of them.
"""

import math
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import wrappers_pb2

from gateway_xds.ir.policies import RateLimit, RateLimitKey
from gateway_xds.translate.config_source import milliseconds

RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
STAT_PREFIX = "rate_limit"
# Clients (IPs or header values) with a bucket per rule; the least recently seen go first.
MAX_CLIENTS_PER_RULE = 10_000
# Envoy refills a bucket at most every 50 ms.
MIN_FILL_INTERVAL_MS = 50
_DESCRIPTOR_KEY = {RateLimitKey.IP_ADDRESS: "remote_address", RateLimitKey.HEADER: "header"}
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


def local_rate_limit(limit: RateLimit) -> local_rate_limit_pb2.LocalRateLimit:
    """The route's buckets: one per client (a wildcard descriptor), and one shared by requests the key
    does not apply to (a missing header)."""
    shape = bucket(limit)
    token_bucket = token_bucket_pb2.TokenBucket(
        max_tokens=shape.max_tokens,
        tokens_per_fill=wrappers_pb2.UInt32Value(value=shape.tokens_per_fill),
        fill_interval=milliseconds(shape.fill_interval_ms),
    )
    key = _DESCRIPTOR_KEY[limit.key]
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
        rate_limits=[route_components_pb2.RateLimit(actions=[_action(limit)])],
        # An entry without a value matches every value, each with a bucket of its own.
        descriptors=[
            ratelimit_pb2.LocalRateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=key)], token_bucket=token_bucket
            )
        ],
        max_dynamic_descriptors=wrappers_pb2.UInt32Value(value=MAX_CLIENTS_PER_RULE),
        always_consume_default_token_bucket=wrappers_pb2.BoolValue(value=False),
    )


def _action(limit: RateLimit) -> route_components_pb2.RateLimit.Action:
    if limit.key is RateLimitKey.HEADER:
        return route_components_pb2.RateLimit.Action(
            request_headers=route_components_pb2.RateLimit.Action.RequestHeaders(
                header_name=limit.header, descriptor_key=_DESCRIPTOR_KEY[limit.key], skip_if_absent=True
            )
        )
    # The client's address as Envoy sees it at the edge (use_remote_address).
    return route_components_pb2.RateLimit.Action(
        remote_address=route_components_pb2.RateLimit.Action.RemoteAddress()
    )

"""Envoy's rate limit service (`envoy.service.ratelimit.v3`) for limits shared by a gateway's Envoys.

Each descriptor carries its rule (service and prefix, rate, burst; see translate/rate_limits.py) and
its client (principal, IP, header value, or none); counts are kept per gateway, the one the asking Envoy's
client certificate names."""

from __future__ import annotations

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from gateway_xds.ratelimit.buckets import BucketStore, Take, retry_after_seconds
from gateway_xds.ratelimit.rules import read_rule
from gateway_xds.server.peer import peer_gateway
from gateway_xds.server.server import ExtraService
from gateway_xds.shared.redis import SharedStateUnavailable
from gateway_xds.translate.rate_limits import CLIENT_KEYS

_OK = rls_pb2.RateLimitResponse.OK
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT


def _take(gateway: str, descriptor: ratelimit_pb2.RateLimitDescriptor) -> Take | None:
    """What the descriptor spends, from the bucket of its rule and client; None when it is not one of
    ours (no limit)."""
    entries = {entry.key: entry.value for entry in descriptor.entries}
    rule = read_rule(entries)
    if rule is None:
        return None
    client = next((f"{key}={entries[key]}" for key in CLIENT_KEYS if key in entries), "")
    return Take((gateway, rule.name, client), rule.requests_per_second, rule.burst)


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]  # xds-protos is untyped
    def __init__(self, buckets: BucketStore) -> None:
        self._buckets = buckets

    async def ShouldRateLimit(
        self,
        request: rls_pb2.RateLimitRequest,
        context: grpc.aio.ServicerContext[rls_pb2.RateLimitRequest, rls_pb2.RateLimitResponse],
    ) -> rls_pb2.RateLimitResponse:
        gateway = peer_gateway(context) or ""
        hits = request.hits_addend or 1
        takes = [_take(gateway, descriptor) for descriptor in request.descriptors]
        try:
            waits = iter(await self._buckets.take_all([take for take in takes if take is not None], hits))
        except SharedStateUnavailable:
            # Envoy lets the request through (failure_mode_deny is off) and counts it in its stats.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "shared rate limits are unavailable")
        response = rls_pb2.RateLimitResponse(overall_code=_OK)
        longest_wait = 0.0
        for take in takes:
            wait = 0.0 if take is None else next(waits)
            response.statuses.add(code=_OVER if wait else _OK)
            longest_wait = max(longest_wait, wait)
        if longest_wait:
            response.overall_code = _OVER
            response.response_headers_to_add.append(
                base_pb2.HeaderValue(key="retry-after", value=str(retry_after_seconds(longest_wait)))
            )
        return response


RATE_LIMIT_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name


def rate_limit_service(buckets: BucketStore) -> ExtraService:
    """The shared limits, for the xDS server (Envoys reach it on the cluster they fetch xDS from)."""
    servicer = RateLimitServicer(buckets)
    return ExtraService(
        RATE_LIMIT_SERVICE,
        lambda server: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, server),
    )

"""Envoy's rate limit service (`envoy.service.ratelimit.v3`) for limits shared by a gateway's Envoys.

Each descriptor carries its rule (service and prefix, rate, burst; see translate/rate_limits.py) and
its client (principal, IP, header value, or none); counts are kept per gateway, the one the asking Envoy's
client certificate names."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from gateway_xds.observe.responses import AnsweredRequests
from gateway_xds.ratelimit.buckets import SharedBuckets, retry_after_seconds
from gateway_xds.ratelimit.rules import read_rule
from gateway_xds.server.peer import peer_gateway
from gateway_xds.server.server import ExtraService
from gateway_xds.translate.rate_limits import CLIENT_KEYS, RULE_SEPARATOR

_OK = rls_pb2.RateLimitResponse.OK
_OVER = rls_pb2.RateLimitResponse.OVER_LIMIT


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(
        self,
        buckets: SharedBuckets,
        clock: Callable[[], float] = time.monotonic,
        answered: AnsweredRequests | None = None,
    ) -> None:
        self._buckets = buckets
        self._clock = clock
        self._answered = answered if answered is not None else AnsweredRequests()

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        gateway = peer_gateway(context) or ""
        hits = request.hits_addend or 1
        now = self._clock()
        response = rls_pb2.RateLimitResponse(overall_code=_OK)
        longest_wait = 0.0
        for descriptor in request.descriptors:
            entries = {entry.key: entry.value for entry in descriptor.entries}
            rule = read_rule(entries)
            if rule is None:
                response.statuses.add(code=_OK)  # not one of ours: no limit
                continue
            client = next((f"{key}={entries[key]}" for key in CLIENT_KEYS if key in entries), "")
            wait = self._buckets.take(
                (gateway, rule.name, client), rule.requests_per_second, rule.burst, hits, now
            )
            response.statuses.add(code=_OVER if wait else _OK)
            if wait and not longest_wait:
                self._answered.limited(rule.name.partition(RULE_SEPARATOR)[0])
            longest_wait = max(longest_wait, wait)
        if longest_wait:
            response.overall_code = _OVER
            response.response_headers_to_add.append(
                base_pb2.HeaderValue(key="retry-after", value=str(retry_after_seconds(longest_wait)))
            )
        return response


RATE_LIMIT_SERVICE = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name


def rate_limit_service(buckets: SharedBuckets, answered: AnsweredRequests | None = None) -> ExtraService:
    """The shared limits, for the xDS server (Envoys reach it on the cluster they fetch xDS from)."""
    servicer = RateLimitServicer(buckets, answered=answered)
    return ExtraService(
        RATE_LIMIT_SERVICE,
        lambda server: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, server),
    )

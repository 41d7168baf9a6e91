"""Traffic policies in the IR and their translation: token buckets, route order, auth per virtual host,
auth before the rate limits, which count principals behind auth."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2

from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.policies import Authorization, RateLimit, RateLimitKey
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.testing.builders import domain_gateway
from gateway_xds.translate.http_filters import http_filters
from gateway_xds.translate.rate_limits import Bucket, bucket
from gateway_xds.translate.routes import virtual_host

AUTHZ = "envoy.filters.http.ext_authz"
RATE_LIMIT = "envoy.filters.http.local_ratelimit"


@pytest.mark.parametrize(
    ("rps", "burst", "expected"),
    [
        (1 / 60, 0, Bucket(max_tokens=1, tokens_per_fill=1, fill_interval_ms=60_000)),
        (0.5, 3, Bucket(max_tokens=4, tokens_per_fill=1, fill_interval_ms=2_000)),
        (2.5, 0, Bucket(max_tokens=1, tokens_per_fill=1, fill_interval_ms=400)),
        (20, 0, Bucket(max_tokens=1, tokens_per_fill=1, fill_interval_ms=50)),
        (100, 10, Bucket(max_tokens=11, tokens_per_fill=5, fill_interval_ms=50)),
        (1000, 0, Bucket(max_tokens=50, tokens_per_fill=50, fill_interval_ms=50)),
    ],
)
def test_buckets_keep_the_rate_with_whole_tokens_at_least_50_ms_apart(
    rps: float, burst: int, expected: Bucket
) -> None:
    shape = bucket(RateLimit("/", rps, burst))
    assert shape == expected
    assert shape.tokens_per_fill * 1000 / shape.fill_interval_ms == pytest.approx(rps, rel=0.01)


def test_retry_after_is_the_wait_for_the_next_token() -> None:
    assert bucket(RateLimit("/", 1 / 60)).retry_after_seconds == 60
    assert bucket(RateLimit("/", 0.3)).retry_after_seconds == 4
    assert bucket(RateLimit("/", 50)).retry_after_seconds == 1


def test_limited_prefixes_get_routes_longest_first() -> None:
    limits = (RateLimit("/", 10), RateLimit("/api", 5), RateLimit("/api/v1/slow", 1 / 60), RateLimit("/b", 1))
    vhost = dataclasses.replace(VirtualHost("svc", ("a.test",), "svc"), rate_limits=limits)
    routes = virtual_host(vhost).routes
    limited = [r.match.prefix for r in routes if RATE_LIMIT in r.typed_per_filter_config]
    assert limited == ["/api/v1/slow", "/api", "/b", "/"]
    # "/" is limited itself, so no unlimited catch-all follows it.
    assert routes[-1].match.prefix == "/" and RATE_LIMIT in routes[-1].typed_per_filter_config


def test_auth_is_per_virtual_host_and_off_unless_asked_for() -> None:
    plain = VirtualHost("svc", ("a.test",), "svc")
    open_host = virtual_host(plain)
    config = ext_authz_pb2.ExtAuthzPerRoute()
    open_host.typed_per_filter_config[AUTHZ].Unpack(config)
    assert config.disabled
    checked = dataclasses.replace(
        VirtualHost("svc", ("a.test",), "svc"), authorization=Authorization("p", "s1")
    )
    virtual_host(checked).typed_per_filter_config[AUTHZ].Unpack(config)
    assert not config.disabled and dict(config.check_settings.context_extensions) == {
        "project": "p",
        "service_id": "s1",
    }


def test_policy_validation_lists_every_problem() -> None:
    ir = domain_gateway(["svc-a"])
    vhost = dataclasses.replace(
        ir.listeners[0].virtual_hosts[0],
        authorization=Authorization("p", "s"),
        rate_limits=(
            RateLimit("api", 1),
            RateLimit("/x", 0.001),
            RateLimit("/x", 1, burst=-1),
            RateLimit("/h", 1, key=RateLimitKey.HEADER),
        ),
    )
    listener = dataclasses.replace(ir.listeners[0], virtual_hosts=(vhost,))
    errors = GatewayIR(ir.gateway_id, (listener,), ir.backends).validate()
    where = "listener 'http' virtual host 'svc-a'"
    assert errors == [
        f"{where}: rate limit 'api': the prefix must start with /",
        f"{where}: rate limit '/x': at least one request a minute",
        f"{where}: rate limit '/x': the prefix appears twice",
        f"{where}: rate limit '/x': burst must not be negative",
        f"{where}: rate limit '/h': a header name goes with key 'header' only",
        f"{where}: needs authorization but the listener has no authorization server",
    ]


def test_auth_comes_first_and_strips_the_clients_principal() -> None:
    listener = domain_gateway(["svc-a"]).listeners[0]
    names = [f.name for f in http_filters(dataclasses.replace(listener, authorization_cluster="xds"))]
    assert names == [
        "gatehouse.gateway_headers",
        "envoy.filters.http.cors",
        AUTHZ,
        RATE_LIMIT,
        "envoy.filters.http.ratelimit",
        "gatehouse.scale_from_zero",
        "envoy.filters.http.router",
    ]


def _limited_route(
    vhost: VirtualHost,
) -> tuple[ext_authz_pb2.ExtAuthzPerRoute, local_rate_limit_pb2.LocalRateLimit]:
    (route,) = [r for r in virtual_host(vhost).routes if r.match.prefix == "/api"]
    check, limit = ext_authz_pb2.ExtAuthzPerRoute(), local_rate_limit_pb2.LocalRateLimit()
    if AUTHZ in route.typed_per_filter_config:
        route.typed_per_filter_config[AUTHZ].Unpack(check)
    route.typed_per_filter_config[RATE_LIMIT].Unpack(limit)
    return check, limit


def test_limits_count_principals_behind_auth_and_the_rules_key_elsewhere() -> None:
    limits = (RateLimit("/api", 2, 1, RateLimitKey.HEADER, "x-user"),)
    open_host = dataclasses.replace(VirtualHost("svc", ("a.test",), "svc"), rate_limits=limits)
    check, limit = _limited_route(open_host)
    assert not check.check_settings.context_extensions
    assert [e.key for e in limit.descriptors[0].entries] == ["header"]
    assert limit.rate_limits[0].actions[0].request_headers.header_name == "x-user"
    checked = dataclasses.replace(open_host, authorization=Authorization("p", "s1"))
    check, limit = _limited_route(checked)
    # The check limits the requests that fail it, under the route's rule.
    assert dict(check.check_settings.context_extensions) == {
        "project": "p",
        "service_id": "s1",
        "rule": "svc|/api",
        "rps": "2",
        "burst": "1",
    }
    assert [e.key for e in limit.descriptors[0].entries] == ["principal"]
    assert limit.rate_limits[0].actions[0].request_headers.header_name == "x-gatehouse-principal"

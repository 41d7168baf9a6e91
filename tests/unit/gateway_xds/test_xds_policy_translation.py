"""Traffic policies in the IR and their translation: token buckets, route order, auth per virtual host
(checked by Envoy against the hashes it carries), auth before the rate limits, which count principals
behind auth, and the refusals, limited per address."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from google.protobuf import json_format

from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.policies import Authorization, OpeningCredential, RateLimit, RateLimitKey
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.testing.builders import domain_gateway
from gateway_xds.translate.host_auth import FAILURE_HEADER, table_version
from gateway_xds.translate.http_filters import http_filters
from gateway_xds.translate.rate_limits import Bucket, bucket
from gateway_xds.translate.routes import virtual_host

CHECK = "gatehouse.auth_check"
RATE_LIMIT = "envoy.filters.http.local_ratelimit"
ANN = OpeningCredential(hashlib.sha256(b"ann's token").hexdigest(), "user:ann")
KEY = OpeningCredential(hashlib.sha256(b"the service's key").hexdigest(), "key:k1")


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


def _check(config: route_components_pb2.Route | route_components_pb2.VirtualHost) -> lua_pb2.LuaPerRoute:
    check = lua_pb2.LuaPerRoute()
    config.typed_per_filter_config[CHECK].Unpack(check)
    return check


def test_auth_is_per_virtual_host_and_off_unless_asked_for() -> None:
    plain = VirtualHost("svc", ("a.test",), "svc")
    open_host = virtual_host(plain)
    assert _check(open_host).disabled and not open_host.HasField("metadata")
    authorization = Authorization("p", "s1", (ANN, KEY))
    checked = virtual_host(dataclasses.replace(plain, authorization=authorization))
    context = json_format.MessageToDict(_check(checked).filter_context)
    assert context == {"service": "s1", "version": table_version(authorization)}
    # The table: hashes and principals, nothing else.
    table = json_format.MessageToDict(checked.metadata.filter_metadata[CHECK])
    assert table == {ANN.hash: "user:ann", KEY.hash: "key:k1"}
    # A revocation is a new table, under a new version (each Envoy worker converts a version once).
    assert table_version(Authorization("p", "s1", (KEY,))) != table_version(authorization)


def test_refusals_answer_401_and_skip_every_check() -> None:
    vhost = dataclasses.replace(
        VirtualHost("svc", ("a.test",), "svc"), authorization=Authorization("p", "s1", (ANN,))
    )
    routes = list(virtual_host(vhost).routes)
    refusals = [r for r in routes if r.match.headers and r.match.headers[0].name == FAILURE_HEADER]
    # One for every path, before the route that forwards; whatever the reason (one bucket per address).
    (refusal,) = refusals
    assert refusal.match.prefix == "/" and refusal.match.headers[0].present_match
    assert routes.index(refusal) < len(routes) - 1
    for refusal in refusals:
        assert refusal.direct_response.status == 401
        assert json.loads(refusal.direct_response.body.inline_string)["error"] == "unauthorized"
        assert {h.header.key for h in refusal.response_headers_to_add} == {"content-type", "www-authenticate"}
        assert _check(refusal).disabled and RATE_LIMIT not in refusal.typed_per_filter_config


def test_policy_validation_lists_every_problem() -> None:
    ir = domain_gateway(["svc-a"])
    vhost = dataclasses.replace(
        ir.listeners[0].virtual_hosts[0],
        authorization=Authorization("p", "s", (ANN, OpeningCredential("plaintext", "user:bob"))),
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
        f"{where}: a credential's hash is not a sha256 in hex (only hashes go to Envoy)",
    ]


def test_auth_comes_first_and_strips_the_clients_principal() -> None:
    listener = domain_gateway(["svc-a"]).listeners[0]
    names = [f.name for f in http_filters(dataclasses.replace(listener, authorization_cluster="xds"))]
    assert names == [
        "gatehouse.gateway_headers",
        "envoy.filters.http.cors",
        CHECK,
        RATE_LIMIT,
        "envoy.filters.http.ratelimit",
        "gatehouse.scale_from_zero",
        "envoy.filters.http.router",
    ]


def _limit(route: route_components_pb2.Route) -> local_rate_limit_pb2.LocalRateLimit:
    limit = local_rate_limit_pb2.LocalRateLimit()
    route.typed_per_filter_config[RATE_LIMIT].Unpack(limit)
    return limit


def test_limits_count_principals_behind_auth_and_the_rules_key_elsewhere() -> None:
    limits = (RateLimit("/api", 2, 1, RateLimitKey.HEADER, "x-user", shared=False),)
    open_host = dataclasses.replace(VirtualHost("svc", ("a.test",), "svc"), rate_limits=limits)
    (route,) = [r for r in virtual_host(open_host).routes if r.match.prefix == "/api"]
    limit = _limit(route)
    assert [e.key for e in limit.descriptors[0].entries] == ["header"]
    assert limit.rate_limits[0].actions[0].request_headers.header_name == "x-user"
    checked = dataclasses.replace(open_host, authorization=Authorization("p", "s1", (ANN,)))
    forwarded, *_ = [r for r in virtual_host(checked).routes if r.match.prefix == "/api" and r.route.cluster]
    limit = _limit(forwarded)
    assert [e.key for e in limit.descriptors[0].entries] == ["principal"]
    assert limit.rate_limits[0].actions[0].request_headers.header_name == "x-gatehouse-principal"


@pytest.mark.parametrize("shared", [False, True])
def test_refusals_under_a_limited_prefix_are_limited_per_address_at_its_rate(shared: bool) -> None:
    limits = (RateLimit("/api", 2, 1, RateLimitKey.HEADER, "x-user", shared=shared),)
    vhost = dataclasses.replace(
        VirtualHost("svc", ("a.test",), "svc"), rate_limits=limits, authorization=Authorization("p", "s1")
    )
    routes = virtual_host(vhost).routes
    refusals = [r for r in routes if r.match.headers and r.match.headers[0].name == FAILURE_HEADER]
    assert [r.match.prefix for r in refusals] == ["/api", "/"]
    for refusal in refusals[:1]:
        limit = _limit(refusal)
        assert [e.key for e in limit.descriptors[0].entries] == ["remote_address"]
        assert limit.rate_limits[0].actions[0].HasField("remote_address")
        assert limit.token_bucket.max_tokens == 2 and not refusal.route.rate_limits
    assert RATE_LIMIT not in refusals[1].typed_per_filter_config

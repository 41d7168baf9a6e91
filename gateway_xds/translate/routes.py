"""Route configurations and virtual hosts.

A SINGLE listener gets one RouteConfiguration named like it with all its virtual hosts; a PER_HOST
listener gets one per virtual host, inside its scope (see scoped_routes.py). A virtual host's routes,
first match wins: ACME answers, the redirect to HTTPS, the body limit, one route per rate-limited
prefix (longest first), everything else.
"""

from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import range_pb2
from google.protobuf import wrappers_pb2

from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import RouteTable
from gateway_xds.ir.policies import RateLimit
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.resources import ROUTE, Resources
from gateway_xds.translate.acme import CHALLENGE_PREFIX, challenge_route
from gateway_xds.translate.authz import auth_check, check_config, without_checks
from gateway_xds.translate.config_source import milliseconds, pack
from gateway_xds.translate.cors import CORS_FILTER, cors_policy
from gateway_xds.translate.headers import forwarded_headers
from gateway_xds.translate.rate_limits import (
    RATE_LIMIT_FILTER,
    local_rate_limit,
    rule_entries,
    shared_rate_limits,
)

BODY_TOO_LARGE_BODY = "request body too large\n"
# Only failures before the request reached a replica are retried, so no request runs twice.
RETRY_ON = "connect-failure,refused-stream,reset-before-request"
_INT64_MAX = (1 << 63) - 1
HTTPS_PORT = 443


def translate_routes(ir: GatewayIR) -> Resources:
    return {
        ROUTE: {
            li.name: route_configuration(li.name, li.virtual_hosts)
            for li in ir.listeners
            if li.route_table is RouteTable.SINGLE
        }
    }


def route_configuration(name: str, vhosts: Iterable[VirtualHost]) -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[virtual_host(v) for v in sorted(vhosts, key=lambda v: v.name)],
        request_headers_to_add=forwarded_headers(),
        # Hosts match with or without a port (the local backend serves :80 on another port).
        ignore_port_in_host_matching=True,
    )


def virtual_host(vhost: VirtualHost) -> route_components_pb2.VirtualHost:
    routes = [challenge_route(c) for c in sorted(vhost.acme_challenges, key=lambda c: c.token)]
    if vhost.https_redirect:
        routes.append(_https_redirect(vhost.https_port))
    if vhost.max_request_body_bytes:
        routes.append(_body_too_large(vhost.max_request_body_bytes))
    for limit in sorted(vhost.rate_limits, key=lambda limit: (-len(limit.prefix), limit.prefix)):
        routes.append(_limited(vhost, limit))
    if all(limit.prefix != "/" for limit in vhost.rate_limits):
        routes.append(
            route_components_pb2.Route(
                match=route_components_pb2.RouteMatch(prefix="/"), route=_forward(vhost)
            )
        )
    # Every route carries its service's backend name, which access logs name it by.
    for route in routes:
        route.name = vhost.backend
    policies = check_config(vhost.authorization, vhost.scale_from_zero)
    if vhost.cors:
        policies[CORS_FILTER] = pack(cors_policy())
    return route_components_pb2.VirtualHost(
        name=vhost.name, domains=list(vhost.domains), routes=routes, typed_per_filter_config=policies
    )


def _https_redirect(https_port: int) -> route_components_pb2.Route:
    """Plain-HTTP requests, ACME challenges excepted, are sent to HTTPS.

    Not `require_tls`, which would redirect the challenges too. X-Forwarded-Proto is the scheme the
    client used: at the edge (`use_remote_address`) Envoy sets it and ignores the client's."""
    plain = route_components_pb2.HeaderMatcher(
        name="x-forwarded-proto", string_match=string_pb2.StringMatcher(exact="http")
    )
    not_a_challenge = route_components_pb2.HeaderMatcher(
        name=":path", string_match=string_pb2.StringMatcher(prefix=CHALLENGE_PREFIX), invert_match=True
    )
    redirect = route_components_pb2.RedirectAction(
        https_redirect=True, response_code=route_components_pb2.RedirectAction.MOVED_PERMANENTLY
    )
    if https_port != HTTPS_PORT:
        redirect.port_redirect = https_port
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/", headers=[plain, not_a_challenge]),
        redirect=redirect,
        # The HTTPS request it leads to is checked.
        typed_per_filter_config=without_checks(),
    )


def _forward(vhost: VirtualHost) -> route_components_pb2.RouteAction:
    action = route_components_pb2.RouteAction(
        cluster=vhost.backend,
        # 0 disables the deadline: streaming responses are not cut while bytes flow.
        timeout=milliseconds(vhost.request_timeout_ms),
        idle_timeout=milliseconds(vhost.idle_timeout_ms),
    )
    if vhost.connect_retries:
        action.retry_policy.CopyFrom(
            route_components_pb2.RetryPolicy(
                retry_on=RETRY_ON,
                num_retries=wrappers_pb2.UInt32Value(value=vhost.connect_retries),
                retry_host_predicate=[
                    route_components_pb2.RetryPolicy.RetryHostPredicate(
                        name="envoy.retry_host_predicates.previous_hosts",
                        typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
                    )
                ],
                host_selection_retry_max_attempts=3,
            )
        )
    return action


def _limited(vhost: VirtualHost, limit: RateLimit) -> route_components_pb2.Route:
    action = _forward(vhost)
    authenticated = vhost.authorization is not None
    policies: dict[str, Any] = {}
    if vhost.authorization is not None:
        policies.update(auth_check(vhost.authorization, rule_entries(vhost.backend, limit)))
    if limit.shared:
        action.rate_limits.extend(shared_rate_limits(vhost.backend, limit, authenticated))
    else:
        policies[RATE_LIMIT_FILTER] = pack(local_rate_limit(limit, authenticated))
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=limit.prefix),
        route=action,
        typed_per_filter_config=policies,
    )


def _body_too_large(limit: int) -> route_components_pb2.Route:
    # Envoy has no streaming body cap; requests that announce a larger body are refused up front.
    too_large = route_components_pb2.HeaderMatcher(
        name="content-length", range_match=range_pb2.Int64Range(start=limit + 1, end=_INT64_MAX)
    )
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/", headers=[too_large]),
        direct_response=route_components_pb2.DirectResponseAction(
            status=413, body=base_pb2.DataSource(inline_string=BODY_TOO_LARGE_BODY)
        ),
    )

"""Route configurations and virtual hosts.

A SINGLE listener gets one RouteConfiguration named like it with all its virtual hosts; a PER_HOST
listener gets one per virtual host, inside its scope (see scoped_routes.py). A virtual host's routes,
first match wins: ACME answers, the redirect to HTTPS, behind auth the refusals (translate/host_auth.py),
the body limit, one route per rate-limited prefix (longest first), everything else.
"""

from collections.abc import Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import range_pb2
from google.protobuf import wrappers_pb2

from gateway_xds.ir.policies import RateLimit
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.translate.acme import CHALLENGE_PREFIX, challenge_route
from gateway_xds.translate.authz import check_config, without_checks
from gateway_xds.translate.config_source import milliseconds, pack
from gateway_xds.translate.cors import CORS_FILTER, cors_policy
from gateway_xds.translate.headers import forwarded_headers
from gateway_xds.translate.host_auth import credentials_metadata, refusal_route
from gateway_xds.translate.rate_limits import RATE_LIMIT_FILTER, local_rate_limit, shared_rate_limits

BODY_TOO_LARGE_BODY = "request body too large\n"
# Only failures before the request reached a replica are retried, so no request runs twice.
RETRY_ON = "connect-failure,refused-stream,reset-before-request"
_INT64_MAX = (1 << 63) - 1
HTTPS_PORT = 443


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
    limits = sorted(vhost.rate_limits, key=lambda limit: (-len(limit.prefix), limit.prefix))
    unlimited = all(limit.prefix != "/" for limit in vhost.rate_limits)
    if vhost.authorization is not None:
        for limit in limits:
            routes.append(refusal_route(limit.prefix, limit, without_checks()))
        if unlimited:
            routes.append(refusal_route("/", None, without_checks()))
    if vhost.max_request_body_bytes:
        routes.append(_body_too_large(vhost.max_request_body_bytes))
    for limit in limits:
        # A twin of a locally limited route would count its own allowance apart: a client could
        # double it with the header. There the header does not pick the canary; the weights do.
        limited = _limited(vhost, limit)
        routes += _with_canary_header(vhost, limited) if limit.shared else [limited]
    if unlimited:
        forward = route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix="/"), route=_forward(vhost)
        )
        routes += _with_canary_header(vhost, forward)
    # Every route carries its service's backend name, which access logs name it by.
    for route in routes:
        route.name = vhost.backend
    policies = check_config(vhost.authorization, vhost.scale_from_zero)
    if vhost.cors:
        policies[CORS_FILTER] = pack(cors_policy())
    virtual_host = route_components_pb2.VirtualHost(
        name=vhost.name, domains=list(vhost.domains), routes=routes, typed_per_filter_config=policies
    )
    if vhost.authorization is not None:
        virtual_host.metadata.CopyFrom(credentials_metadata(vhost.authorization))
    return virtual_host


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


def _with_canary_header(
    vhost: VirtualHost, route: route_components_pb2.Route
) -> list[route_components_pb2.Route]:
    """The route, preceded by its twin for requests carrying the canary's header: the same checks
    (and shared limits, counted by backend for both), to the canary's backend alone."""
    canary = vhost.canary
    if canary is None or not canary.header:
        return [route]
    twin = route_components_pb2.Route()
    twin.CopyFrom(route)
    twin.match.headers.append(route_components_pb2.HeaderMatcher(name=canary.header, present_match=True))
    twin.route.ClearField("weighted_clusters")
    twin.route.cluster = canary.backend
    return [twin, route]


def _destination(vhost: VirtualHost, action: route_components_pb2.RouteAction) -> None:
    """The backend, or with a canary taking a share of the requests, both by weight."""
    canary = vhost.canary
    if canary is None or canary.weight == 0:
        action.cluster = vhost.backend
    elif canary.weight == 100:
        action.cluster = canary.backend
    else:
        weighted = route_components_pb2.WeightedCluster.ClusterWeight
        action.weighted_clusters.clusters.extend(
            [
                weighted(name=vhost.backend, weight=wrappers_pb2.UInt32Value(value=100 - canary.weight)),
                weighted(name=canary.backend, weight=wrappers_pb2.UInt32Value(value=canary.weight)),
            ]
        )


def _forward(vhost: VirtualHost) -> route_components_pb2.RouteAction:
    action = route_components_pb2.RouteAction(
        # 0 disables the deadline: streaming responses are not cut while bytes flow.
        timeout=milliseconds(vhost.request_timeout_ms),
        idle_timeout=milliseconds(vhost.idle_timeout_ms),
    )
    _destination(vhost, action)
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

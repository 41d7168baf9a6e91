"""ACME HTTP-01 answers from Envoy itself: `GET /.well-known/acme-challenge/<token>` on the host's
plain port gives 200 with the key authorization, before any redirect or policy (auth included)."""

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2

from gateway_xds.ir.tls import AcmeChallenge
from gateway_xds.translate.authz import without_checks

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def challenge_route(challenge: AcmeChallenge) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(path=CHALLENGE_PREFIX + challenge.token),
        direct_response=route_components_pb2.DirectResponseAction(
            status=200, body=base_pb2.DataSource(inline_string=challenge.key_authorization)
        ),
        response_headers_to_add=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key="content-type", value="text/plain"),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        ],
        # The CA has no credential.
        typed_per_filter_config=without_checks(),
    )

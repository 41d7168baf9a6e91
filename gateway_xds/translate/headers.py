"""What the replicas learn about the original request (X-Forwarded-*, X-Real-IP, the principal).

With `use_remote_address` Envoy itself sets X-Forwarded-For (appending the peer) and
X-Forwarded-Proto (the scheme the client used), and `append_x_forwarded_port` X-Forwarded-Port.
These add the rest, overwriting whatever the client sent. The principal (and a refusal's mark) is set
by the auth check only (translate/host_auth.py): a copy the client sent is removed before any filter
reads it.
"""

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2

from gateway_xds.authz.credentials import PRINCIPAL_HEADER
from gateway_xds.translate.host_auth import FAILURE_HEADER

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

FORWARDED_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-real-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("x-forwarded-host", "%REQ(:AUTHORITY)%"),
)
GATEWAY_HEADERS_FILTER = "gatehouse.gateway_headers"
# Headers only the gateway may set.
GATEWAY_HEADERS = (PRINCIPAL_HEADER, FAILURE_HEADER)


def forwarded_headers() -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
        )
        for key, value in FORWARDED_HEADERS
    ]


def clients_gateway_headers_removed() -> header_mutation_pb2.HeaderMutation:
    """The first filter: the client's copies of the gateway's own headers are dropped."""
    removals = [mutation_rules_pb2.HeaderMutation(remove=name) for name in GATEWAY_HEADERS]
    return header_mutation_pb2.HeaderMutation(
        mutations=header_mutation_pb2.Mutations(request_mutations=removals)
    )

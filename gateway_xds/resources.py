"""xDS resource type URLs and the shape of a translated resource set."""

from google.protobuf.message import Message

_PREFIX = "type.googleapis.com/"

LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = _PREFIX + "envoy.config.route.v3.ScopedRouteConfiguration"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Make-before-break: a resource is pushed before anything that refers to it (clusters, their
# endpoints, certificates, then listeners, then the routes that name the clusters).
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, SECRET, LISTENER, SCOPED_ROUTE, ROUTE)

# Types Envoy subscribes to as a whole (wildcard); the others are requested by name.
WILDCARD_TYPES: frozenset[str] = frozenset({CLUSTER, LISTENER, SCOPED_ROUTE})

# The types that carry routing: clusters are removed only once the node has applied these.
ROUTING_TYPES: frozenset[str] = frozenset({LISTENER, SCOPED_ROUTE, ROUTE})

# type URL -> resource name -> resource.
Resources = dict[str, dict[str, Message]]


def empty_resources() -> Resources:
    return {type_url: {} for type_url in PUSH_ORDER}


def short_name(type_url: str) -> str:
    """`...v3.Cluster` -> `Cluster`, for logs and messages."""
    return type_url.rsplit(".", 1)[-1]

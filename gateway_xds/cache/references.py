"""The names one xDS resource refers to in another type (listener -> route config, cluster -> CLA...)."""

from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2, scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET

_HCM_TYPE = hcm.HttpConnectionManager.DESCRIPTOR.full_name
_DOWNSTREAM_TLS_TYPE = tls_pb2.DownstreamTlsContext.DESCRIPTOR.full_name
_UPSTREAM_TLS_TYPE = tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name

References = Mapping[str, frozenset[str]]
NO_REFERENCES: References = {}


def _chains(listener: listener_pb2.Listener) -> list[listener_components_pb2.FilterChain]:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    return chains


def listener_secret_names(listener: listener_pb2.Listener) -> set[str]:
    """Certificates the listener's TLS filter chains fetch over SDS."""
    names: set[str] = set()
    for chain in _chains(listener):
        config = chain.transport_socket.typed_config
        if config.TypeName() != _DOWNSTREAM_TLS_TYPE:
            continue
        context = tls_pb2.DownstreamTlsContext()
        config.Unpack(context)
        names |= _sds_names(context.common_tls_context)
    return names


def cluster_secret_names(cluster: cluster_pb2.Cluster) -> set[str]:
    """Certificates and CAs the cluster's TLS to its upstreams fetches over SDS."""
    config = cluster.transport_socket.typed_config
    if config.TypeName() != _UPSTREAM_TLS_TYPE:
        return set()
    context = tls_pb2.UpstreamTlsContext()
    config.Unpack(context)
    return _sds_names(context.common_tls_context)


def _sds_names(context: tls_pb2.CommonTlsContext) -> set[str]:
    names = {sds.name for sds in context.tls_certificate_sds_secret_configs}
    for validation in (
        context.validation_context_sds_secret_config,
        context.combined_validation_context.validation_context_sds_secret_config,
    ):
        if validation.name:
            names.add(validation.name)
    return names


def listener_route_names(listener: listener_pb2.Listener) -> set[str]:
    """Route configurations the listener's HTTP connection managers fetch over RDS."""
    names: set[str] = set()
    for chain in _chains(listener):
        for network_filter in chain.filters:
            config = network_filter.typed_config
            if config.TypeName() != _HCM_TYPE:
                continue
            manager = hcm.HttpConnectionManager()
            config.Unpack(manager)
            if manager.HasField("rds"):
                names.add(manager.rds.route_config_name)
    return names


def cluster_eds_name(cluster: cluster_pb2.Cluster) -> str | None:
    """The ClusterLoadAssignment name an EDS cluster asks for; None for other cluster types."""
    if cluster.type != cluster_pb2.Cluster.EDS:
        return None
    name: str = cluster.eds_cluster_config.service_name or cluster.name
    return name


def route_cluster_names(config: route_pb2.RouteConfiguration) -> set[str]:
    """Clusters named by the routes, directly or by weight (header-named clusters cannot be followed)."""
    names: set[str] = set()
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            if not route.HasField("route"):
                continue
            if route.route.cluster:
                names.add(route.route.cluster)
            names.update(weighted.name for weighted in route.route.weighted_clusters.clusters)
    return names


def references(type_url: str, message: Message) -> References:
    """What a resource needs of other types, by type URL."""
    if type_url == LISTENER:
        assert isinstance(message, listener_pb2.Listener)
        return _only({ROUTE: listener_route_names(message), SECRET: listener_secret_names(message)})
    if type_url == CLUSTER:
        assert isinstance(message, cluster_pb2.Cluster)
        eds_name = cluster_eds_name(message)
        return _only(
            {ENDPOINT: {eds_name} if eds_name is not None else set(), SECRET: cluster_secret_names(message)}
        )
    if type_url == ROUTE:
        assert isinstance(message, route_pb2.RouteConfiguration)
        return _only({CLUSTER: route_cluster_names(message)})
    if type_url == SCOPED_ROUTE:
        assert isinstance(message, scoped_route_pb2.ScopedRouteConfiguration)
        if message.HasField("route_configuration"):
            return _only({CLUSTER: route_cluster_names(message.route_configuration)})
        return _only({ROUTE: {message.route_configuration_name}})
    return NO_REFERENCES


def _only(found: Mapping[str, set[str]]) -> References:
    return {type_url: frozenset(names) for type_url, names in found.items() if names}

"""HTTP listeners: one Listener with an HttpConnectionManager whose routes come over RDS or SRDS,
and for a listener with a TLS port a second Listener, routed the same way, that terminates TLS.

A listener depends only on its address, ports, route table and certificates' names, never on its
virtual hosts, so adding or removing a service never replaces a listener (which would drain its
connections). Both Listeners of a PER_HOST listener get every scope: Envoy hands each scoped route
configuration fetched over ADS to every connection manager that uses scoped routes, so the TLS
port shares the plain port's scopes (a route may tell them apart by X-Forwarded-Proto).
"""

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import wrappers_pb2

from gateway_xds.ir.agent_tunnels import AgentTunnels
from gateway_xds.ir.listeners import HTTPListener, RouteTable
from gateway_xds.ir.routes import DEFAULT_IDLE_TIMEOUT_MS
from gateway_xds.translate.access_log import access_log
from gateway_xds.translate.agent_tunnels import BALANCED, tunnel_filter_chain
from gateway_xds.translate.config_source import (
    EXCLUSIVE_BIND,
    ads_config_source,
    milliseconds,
    pack,
    socket_address,
)
from gateway_xds.translate.http_filters import http_filters
from gateway_xds.translate.local_replies import local_reply_config
from gateway_xds.translate.tls import certificate_filter_chain, no_certificate_chain, tls_inspector

HCM_FILTER = "envoy.filters.network.http_connection_manager"
# Slow clients get this long to send their request headers.
REQUEST_HEADERS_TIMEOUT_MS = 60_000

_Extractor = hcm.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder.HeaderValueExtractor


def listener_resources(li: HTTPListener, tunnels: AgentTunnels | None = None) -> list[listener_pb2.Listener]:
    """The listener's Listener resources: the plain one, and the TLS one if it has a TLS port, which
    takes agents' tunnels too when the gateway takes them (translate/agent_tunnels.py)."""
    plain = listener_pb2.Listener(
        name=li.name,
        address=socket_address(li.address, li.port),
        enable_reuse_port=EXCLUSIVE_BIND,
        filter_chains=[listener_components_pb2.FilterChain(filters=_filters(li, li.name))],
    )
    if li.tls is None:
        return [plain]
    filters = _filters(li, li.tls.name)
    secure = listener_pb2.Listener(
        name=li.tls.name,
        address=socket_address(li.address, li.tls.port),
        enable_reuse_port=EXCLUSIVE_BIND,
        listener_filters=[tls_inspector()],
        filter_chains=[certificate_filter_chain(c, filters) for c in li.tls.certificates],
        default_filter_chain=no_certificate_chain(),
    )
    if tunnels is not None:
        secure.filter_chains.append(tunnel_filter_chain(tunnels, shared=True))
        secure.connection_balance_config.CopyFrom(BALANCED)
    return [plain, secure]


def _filters(li: HTTPListener, stat_prefix: str) -> list[listener_components_pb2.Filter]:
    manager = pack(_manager(li, stat_prefix))
    return [listener_components_pb2.Filter(name=HCM_FILTER, typed_config=manager)]


def _manager(li: HTTPListener, stat_prefix: str) -> hcm.HttpConnectionManager:
    manager = hcm.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm.HttpConnectionManager.AUTO,
        http_filters=http_filters(li),
        # This is the edge: the peer is the client (X-Forwarded-For, X-Forwarded-Proto).
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        append_x_forwarded_port=True,
        upgrade_configs=[hcm.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        # No total request deadline (request_timeout stays unset); routes set their own idle
        # timeout, this one covers what no route matched.
        stream_idle_timeout=milliseconds(DEFAULT_IDLE_TIMEOUT_MS),
        request_headers_timeout=milliseconds(REQUEST_HEADERS_TIMEOUT_MS),
        local_reply_config=local_reply_config(),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        strip_trailing_host_dot=True,
    )
    if li.authorization_cluster and li.access_log_percent > 0:
        manager.access_log.append(access_log(li.authorization_cluster, li.access_log_percent))
    if li.route_table is RouteTable.PER_HOST:
        manager.scoped_routes.CopyFrom(_scoped_routes(li))
    else:
        manager.rds.CopyFrom(hcm.Rds(config_source=ads_config_source(), route_config_name=li.name))
    return manager


def _scoped_routes(li: HTTPListener) -> hcm.ScopedRoutes:
    # The scope key is the Host (":authority") cut at its first ':', so "a.example.com:8080" and
    # "a.example.com" find the same scope.
    host = hcm.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder(
        header_value_extractor=_Extractor(name=":authority", element_separator=":", index=0)
    )
    return hcm.ScopedRoutes(
        name=li.name,
        scope_key_builder=hcm.ScopedRoutes.ScopeKeyBuilder(fragments=[host]),
        rds_config_source=ads_config_source(),
        scoped_rds=hcm.ScopedRds(scoped_rds_config_source=ads_config_source()),
    )

"""The HTTP filters of every connection manager, in order: the client's copies of the gateway's own
headers removed; CORS (preflights are answered before anything else); the auth check (Envoy's own,
translate/host_auth.py); local rate limiting; where the listener has a control-plane cluster, the
shared rate limits (asked only on routes that have some) and the wake check (off unless a virtual
host turns it on); the router.

Auth comes before the rate limits, so that limits count the principal the check found (never a
header the client chose) and a request that fails auth spends no one's allowance: it is routed to a
refusal route, whose limit counts failures per client address. The wake check comes last, so a
refused request never wakes a service.

CORS, auth and rate limiting act only where a virtual host or route configures them, so a
listener's filters never depend on its services: a policy change (a revocation included) is a route
change, never a listener change.
"""

from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf.message import Message

from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.translate.authz import WAKE_FILTER, wake_filter
from gateway_xds.translate.config_source import pack
from gateway_xds.translate.cors import CORS_FILTER
from gateway_xds.translate.headers import GATEWAY_HEADERS_FILTER, clients_gateway_headers_removed
from gateway_xds.translate.host_auth import AUTH_CHECK_FILTER, auth_check_filter
from gateway_xds.translate.rate_limits import (
    GLOBAL_RATE_LIMIT_FILTER,
    RATE_LIMIT_FILTER,
    STAT_PREFIX,
    global_rate_limit_filter,
)

ROUTER_FILTER = "envoy.filters.http.router"


def http_filters(li: HTTPListener) -> list[hcm.HttpFilter]:
    cluster = li.authorization_cluster
    filters = [
        _filter(GATEWAY_HEADERS_FILTER, clients_gateway_headers_removed()),
        _filter(CORS_FILTER, cors_pb2.Cors()),
        _filter(AUTH_CHECK_FILTER, auth_check_filter()),
    ]
    filters.append(_filter(RATE_LIMIT_FILTER, local_rate_limit_pb2.LocalRateLimit(stat_prefix=STAT_PREFIX)))
    if cluster:
        filters.append(_filter(GLOBAL_RATE_LIMIT_FILTER, global_rate_limit_filter(cluster)))
        filters.append(_filter(WAKE_FILTER, wake_filter(cluster), disabled=True))
    filters.append(_filter(ROUTER_FILTER, router_pb2.Router()))
    return filters


def _filter(name: str, config: Message, disabled: bool = False) -> hcm.HttpFilter:
    return hcm.HttpFilter(name=name, typed_config=pack(config), disabled=disabled)

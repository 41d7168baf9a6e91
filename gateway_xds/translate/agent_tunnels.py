"""Replicas behind NAT at Envoy speed: the gateway's end of its agents' reverse tunnels.

An agent's Envoy dials the gateway over TLS with its certificate and says, in a one-request HTTP
handshake, which node (its certificate's serial) and cluster (its certificate's DNS name,
`<service id>.<gateway id>.agents.gatehouse`) it is. The listener accepts only certificates of
the internal CA named for one of this gateway's services, and only the node and cluster ids its
certificate names (reverse_tunnel's `validation`), so an agent can never offer itself for another
service. Envoy then keeps that TCP connection, idle, for the cluster of the service: a request picks
one of the cluster's nodes and uses its connection as an upstream HTTP/2 connection. Those connections
are spread evenly over the listener's workers (exact balance): Envoy keeps a tunnel on the worker
that accepted it, and a worker without one could not reach the service.

Agents dial the gateway's HTTPS port when it has one (gatehouse/agent_tunnels.py): there the tunnels'
filter chain sits beside the certificates' chains, picked by the tunnels' server name and ALPN
protocol together, which no browser sends; any other name reaches the HTTPS routes as before, and a
client that sends both without an agent's certificate fails its TLS handshake. The `agent-tunnels`
listener, on a port of its own, takes them on every gateway (one without HTTPS, and agents configured
before it had HTTPS).

Envoy hands the tunnel on as a plain socket once the handshake is done: the TLS session that carried
the handshake is left behind. So the service's cluster starts a TLS session of its own over the tunnel,
with the gateway's certificate, and accepts only an agent certificate naming that service; the agent's
Envoy ends it and asks for this gateway's certificate. Every byte of a request is encrypted, and
authenticated both ways, end to end between the two Envoys.

The gateway's certificate and the CA reach Envoy over SDS (`agent-tunnels-identity`,
`agent-tunnels-ca`), so a renewal touches no listener or cluster.
"""

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.clusters.reverse_connection.v3 import reverse_connection_pb2
from envoy.extensions.filters.network.reverse_tunnel.v3 import reverse_tunnel_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from gatehouse.agent_tunnels import TUNNEL_ALPN
from gateway_xds.ir.agent_tunnels import AgentTunnels
from gateway_xds.ir.backends import Backend
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.resources import LISTENER, SECRET, Resources
from gateway_xds.translate.config_source import (
    EXCLUSIVE_BIND,
    ads_config_source,
    milliseconds,
    pack,
    socket_address,
)
from gateway_xds.translate.tls import TLS_TRANSPORT_SOCKET

IDENTITY_SECRET = "agent-tunnels-identity"
CA_SECRET = "agent-tunnels-ca"
REVERSE_TUNNEL_FILTER = "envoy.filters.network.reverse_tunnel"
REVERSE_CONNECTION_CLUSTER = "envoy.clusters.reverse_connection"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# What the handshake's node and cluster ids must be: the agent certificate's serial and DNS name.
NODE_OF_CERTIFICATE = "%DOWNSTREAM_PEER_SERIAL%"
CLUSTER_OF_CERTIFICATE = "%DOWNSTREAM_PEER_DNS_SAN%"
# Idle tunnels are pinged this often; one that stops answering is dropped.
PING_INTERVAL_MS = 2_000
# How often Envoy forgets agents that have no tunnel left.
CLEANUP_INTERVAL_MS = 60_000
_DNS = common_pb2.SubjectAltNameMatcher.DNS
# Envoy keeps a tunnel on the worker that accepted it: every listener that takes tunnels spreads its
# connections evenly over the workers, so that each has tunnels of every agent.
BALANCED = listener_pb2.Listener.ConnectionBalanceConfig(
    exact_balance=listener_pb2.Listener.ConnectionBalanceConfig.ExactBalance()
)


def translate_agent_tunnels(ir: GatewayIR) -> Resources:
    tunnels = ir.agent_tunnels
    if tunnels is None:
        return {}
    return {
        LISTENER: {tunnels.name: tunnel_listener(tunnels)},
        SECRET: {IDENTITY_SECRET: identity_secret(tunnels), CA_SECRET: ca_secret(tunnels)},
    }


def tunnel_listener(tunnels: AgentTunnels) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=tunnels.name,
        address=socket_address(tunnels.address, tunnels.port),
        enable_reuse_port=EXCLUSIVE_BIND,
        connection_balance_config=BALANCED,
        filter_chains=[tunnel_filter_chain(tunnels, shared=False)],
    )


def tunnel_filter_chain(tunnels: AgentTunnels, shared: bool) -> listener_components_pb2.FilterChain:
    """TLS with an agent's certificate of this gateway, then the tunnel handshake; on a `shared`
    port (HTTPS), only for the tunnels' server name and ALPN protocol."""
    handshake = reverse_tunnel_pb2.ReverseTunnel(
        ping_interval=milliseconds(PING_INTERVAL_MS),
        validation=reverse_tunnel_pb2.Validation(
            node_id_format=NODE_OF_CERTIFICATE, cluster_id_format=CLUSTER_OF_CERTIFICATE
        ),
    )
    context = tls_pb2.DownstreamTlsContext(
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
        common_tls_context=_common_tls_context(string_pb2.StringMatcher(suffix=tunnels.agent_suffix)),
    )
    chain = listener_components_pb2.FilterChain(
        transport_socket=base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context)),
        filters=[listener_components_pb2.Filter(name=REVERSE_TUNNEL_FILTER, typed_config=pack(handshake))],
    )
    if shared:
        chain.name = tunnels.name
        chain.filter_chain_match.server_names.append(tunnels.server_name)
        chain.filter_chain_match.application_protocols.append(TUNNEL_ALPN)
    return chain


def agent_tunnel_cluster(backend: Backend) -> cluster_pb2.Cluster:
    """The service's cluster when its replicas are behind agents: no endpoints, the connections are
    the tunnels of the agents named `backend.agent_name`, each carrying a TLS session of the gateway's
    over which requests go as HTTP/2 streams."""
    config = reverse_connection_pb2.ReverseConnectionClusterConfig(
        cleanup_interval=milliseconds(CLEANUP_INTERVAL_MS),
        # A fixed text: every request of this cluster goes to one of the service's agents.
        host_id_format=backend.agent_name,
    )
    http2 = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            # WebSockets cross the tunnel as extended CONNECT (RFC 8441); the agent's Envoy turns them
            # back into an HTTP/1.1 upgrade to the replica.
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions(allow_connect=True)
        )
    )
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=_common_tls_context(string_pb2.StringMatcher(exact=backend.agent_name))
    )
    return cluster_pb2.Cluster(
        name=backend.name,
        cluster_type=cluster_pb2.Cluster.CustomClusterType(
            name=REVERSE_CONNECTION_CLUSTER, typed_config=pack(config)
        ),
        connect_timeout=milliseconds(backend.connect_timeout_ms),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED,
        typed_extension_protocol_options={HTTP_PROTOCOL_OPTIONS: pack(http2)},
        transport_socket=base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context)),
    )


def identity_secret(tunnels: AgentTunnels) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=IDENTITY_SECRET,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=tunnels.certificate_chain),
            private_key=base_pb2.DataSource(inline_string=tunnels.private_key),
        ),
    )


def ca_secret(tunnels: AgentTunnels) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=CA_SECRET,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=tunnels.trusted_ca)
        ),
    )


def _common_tls_context(peer_name: string_pb2.StringMatcher) -> tls_pb2.CommonTlsContext:
    """The gateway's certificate; the peer's must be the CA's and carry a DNS name `peer_name` matches."""
    return tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2),
        tls_certificate_sds_secret_configs=[
            secret_pb2.SdsSecretConfig(name=IDENTITY_SECRET, sds_config=ads_config_source())
        ],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=[
                    common_pb2.SubjectAltNameMatcher(san_type=_DNS, matcher=peer_name)
                ]
            ),
            validation_context_sds_secret_config=secret_pb2.SdsSecretConfig(
                name=CA_SECRET, sds_config=ads_config_source()
            ),
        ),
    )

"""The TLS parts of a TLS port's Listener: SNI inspection, one filter chain per certificate with its
certificate fetched over SDS, and a default chain that closes connections no certificate matches.

A filter chain names its certificate's Secret and its server names, never the certificate itself, so
a renewal (a new Secret under the same name) leaves the Listener as it is. Adding or removing a
certificate changes the filter chains only, which Envoy applies in place, draining only the chains
that went away.
"""

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.direct_response.v3 import config_pb2 as direct_response_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from gateway_xds.ir.tls import ServerCertificate
from gateway_xds.translate.config_source import ads_config_source, pack

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
DIRECT_RESPONSE_FILTER = "envoy.filters.network.direct_response"
ALPN_PROTOCOLS = ("h2", "http/1.1")


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    """Reads the SNI of the ClientHello, which the filter chains match on."""
    return listener_components_pb2.ListenerFilter(
        name=TLS_INSPECTOR, typed_config=pack(tls_inspector_pb2.TlsInspector())
    )


def certificate_filter_chain(
    certificate: ServerCertificate, filters: list[listener_components_pb2.Filter]
) -> listener_components_pb2.FilterChain:
    return listener_components_pb2.FilterChain(
        name=certificate.secret,
        filter_chain_match=listener_components_pb2.FilterChainMatch(
            server_names=list(certificate.server_names)
        ),
        transport_socket=base_pb2.TransportSocket(
            name=TLS_TRANSPORT_SOCKET, typed_config=pack(_downstream_tls(certificate.secret))
        ),
        filters=filters,
    )


def no_certificate_chain() -> listener_components_pb2.FilterChain:
    """For a name no certificate covers (or no SNI at all): the connection is closed at once. A listener
    needs at least one chain, and this one keeps the Listener the same whatever certificates exist."""
    return listener_components_pb2.FilterChain(
        name="no-certificate",
        filters=[
            listener_components_pb2.Filter(
                name=DIRECT_RESPONSE_FILTER, typed_config=pack(direct_response_pb2.Config())
            )
        ],
    )


def _downstream_tls(secret: str) -> tls_pb2.DownstreamTlsContext:
    return tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_params=common_pb2.TlsParameters(
                tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2
            ),
            tls_certificate_sds_secret_configs=[
                secret_pb2.SdsSecretConfig(name=secret, sds_config=ads_config_source())
            ],
            alpn_protocols=list(ALPN_PROTOCOLS),
        )
    )

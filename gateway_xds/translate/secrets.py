"""Certificates as SDS Secrets, fetched by name by the TLS filter chains that use them."""

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from gateway_xds.ir.tls import TLSSecret


def tls_secret(secret: TLSSecret) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=secret.name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=secret.certificate_chain),
            private_key=base_pb2.DataSource(inline_string=secret.private_key),
        ),
    )

"""What an agent that runs an Envoy is given: a certificate naming its service on its gateway, kept
across reconnects while it still fits, and where its gateway takes tunnels."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gatehouse.agent_keys import certificate_node, certificate_request, new_key
from gatehouse.agent_tunnels import agent_name
from gatehouse.v1 import resources_pb2, tunnel_pb2
from services.common.errors import Unavailable
from services.common.internal_ca import InternalCA
from services.provisioner.agent_certificates import AgentTunnelIssuer

GATEWAY = resources_pb2.Gateway(id="gw-1", status=resources_pb2.GatewayStatus(hostname="203.0.113.7"))


def service(service_id: str = "svc-1", gateway_id: str = "gw-1") -> resources_pb2.Service:
    return resources_pb2.Service(
        id=service_id, name="laptop", spec=resources_pb2.ServiceSpec(gateway_id=gateway_id)
    )


def hello(key: bytes, certificate: bytes = b"") -> tunnel_pb2.TunnelHello:
    return tunnel_pb2.TunnelHello(certificate_request=certificate_request(key, "r"), certificate=certificate)


def issuer(ca: InternalCA) -> AgentTunnelIssuer:
    gateways = {"gw-1": GATEWAY}
    return AgentTunnelIssuer(ca, 8444, gateways.get, gateway_wait_seconds=0.2)


def test_the_certificate_names_the_service_on_its_gateway_and_is_kept_while_it_fits() -> None:
    ca, key = InternalCA.create(), new_key()
    tunnel = asyncio.run(issuer(ca).issue(service(), hello(key)))
    certificate = x509.load_pem_x509_certificate(tunnel.certificate)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [agent_name("svc-1", "gw-1")] == [tunnel.agent_name]
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert (tunnel.host, tunnel.port, tunnel.gateway_id) == ("203.0.113.7", 8444, "gw-1")
    assert tunnel.node == certificate_node(tunnel.certificate) and ca.issued(tunnel.certificate)

    # Reconnecting with it: the same certificate, so the same node id.
    again = asyncio.run(issuer(ca).issue(service(), hello(key, tunnel.certificate)))
    assert again.certificate == tunnel.certificate
    # Another key, another service, another CA's certificate: a new one each time.
    assert asyncio.run(issuer(ca).issue(service(), hello(new_key(), tunnel.certificate))).node != tunnel.node
    moved = asyncio.run(issuer(ca).issue(service("svc-2"), hello(key, tunnel.certificate)))
    assert moved.agent_name == agent_name("svc-2", "gw-1") and moved.node != tunnel.node
    other = InternalCA.create()
    assert asyncio.run(issuer(other).issue(service(), hello(key, tunnel.certificate))).node != tunnel.node


def test_a_certificate_near_its_end_is_replaced() -> None:
    ca, key = InternalCA.create(leaf_validity=datetime.timedelta(days=2)), new_key()
    tunnel = asyncio.run(issuer(ca).issue(service(), hello(key)))
    # Two days of a 30-day lifetime: less than a third left.
    assert asyncio.run(issuer(ca).issue(service(), hello(key, tunnel.certificate))).node != tunnel.node


def test_no_certificate_until_the_gateway_runs() -> None:
    ca = InternalCA.create()
    with pytest.raises(Unavailable):
        asyncio.run(issuer(ca).issue(service(gateway_id="gw-2"), hello(new_key())))


@pytest.mark.parametrize(
    ("domain", "certificate", "https_port", "dialled"),
    [
        ("example.com", "lets-encrypt", 443, 443),  # the gateway's Envoy ends TLS: its HTTPS port
        ("example.com", "lets-encrypt", 8443, 8443),  # a local gateway's HTTPS port
        ("example.com", "acm", 443, 8444),  # TLS ends at the load balancer: the tunnel port
        ("", "lets-encrypt", 443, 8444),  # no domain, no HTTPS listener
        ("example.com", "lets-encrypt", 0, 8444),  # no HTTPS port reported
    ],
)
async def test_agents_dial_the_https_port_where_the_gateways_envoy_ends_tls(
    domain: str, certificate: str, https_port: int, dialled: int
) -> None:
    policy = resources_pb2.Certificate(type=certificate)
    gateway = resources_pb2.Gateway(
        id="gw-1",
        spec=resources_pb2.GatewaySpec(domain=domain, certificate=policy),
        status=resources_pb2.GatewayStatus(hostname="203.0.113.7", https_port=https_port),
    )
    issuing = AgentTunnelIssuer(InternalCA.create(), 8444, {"gw-1": gateway}.get, gateway_wait_seconds=0.2)
    tunnel = await issuing.issue(service(), hello(new_key()))
    assert (tunnel.host, tunnel.port) == ("203.0.113.7", dialled)

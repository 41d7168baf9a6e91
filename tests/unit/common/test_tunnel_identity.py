"""A gateway's identity towards its agents is the same from every gateway_xds process."""

from __future__ import annotations

from cryptography import x509

from services.common.internal_ca import GatewayTunnelIdentities, InternalCA


def test_every_process_and_restart_serves_the_same_tunnel_identity() -> None:
    ca = InternalCA.create()
    first, second = GatewayTunnelIdentities(ca, 8444), GatewayTunnelIdentities(ca, 8444)
    assert first.certificate("gw-one") == second.certificate("gw-one")
    assert first.certificate("gw-one") != first.certificate("gw-two")
    certificate_pem, _ = first.certificate("gw-one")
    assert ca.issued(certificate_pem.encode())
    names = x509.load_pem_x509_certificate(certificate_pem.encode()).subject.rfc4514_string()
    assert names == "CN=gw-one"
    # Another CA (another installation) makes another identity.
    assert GatewayTunnelIdentities(InternalCA.create(), 8444).certificate("gw-one") != first.certificate(
        "gw-one"
    )

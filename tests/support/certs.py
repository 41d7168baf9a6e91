"""Self-signed certificates for test servers on loopback."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatehouse.envoy_bootstrap import XdsTls
from services.common.internal_ca import XDS_SERVER_NAME, InternalCA


def self_signed(
    directory: Path, stem: str, dns_names: Sequence[str] = (), addresses: Sequence[str] = ("127.0.0.1",)
) -> tuple[Path, Path]:
    """`<stem>.crt` and `<stem>.key` in `directory`: a CA-flagged certificate for these names, which
    is also the file clients trust it with."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gatehouse test {stem}")])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def client_files(ca: InternalCA, gateway_id: str, workdir: Path) -> XdsTls:
    """The gateway's client certificate for gateway_xds, as files its Envoy reads."""
    issued = ca.client_certificate(gateway_id)
    for name, content in (("xds-client.pem", issued.certificate_pem), ("xds-client.key", issued.key_pem)):
        (workdir / name).write_bytes(content)
    (workdir / "xds-ca.pem").write_bytes(issued.ca_pem)
    certificate, key, authority = (
        str(workdir / name) for name in ("xds-client.pem", "xds-client.key", "xds-ca.pem")
    )
    return XdsTls(certificate, key, authority, server_name=XDS_SERVER_NAME)

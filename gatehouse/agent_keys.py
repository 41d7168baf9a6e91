"""An agent's key, made where it runs (it never leaves that machine), and what its certificate says."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatehouse.agent_tunnels import node_id


def new_key() -> bytes:
    """A new private key, PEM (PKCS#8)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate_request(key_pem: bytes, common_name: str) -> bytes:
    """A CSR for `key_pem`: its signature shows the CA that the sender holds the key."""
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def certificate_node(certificate_pem: bytes) -> str:
    """The tunnel node id a certificate stands for (its serial, as Envoy prints it)."""
    return node_id(x509.load_pem_x509_certificate(certificate_pem).serial_number)


def certificate_expires(certificate_pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(certificate_pem).not_valid_after_utc

"""The internal CA: made once and kept (key encrypted), and the identities it puts in certificates."""

import datetime

import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatehouse.gateway_identity import gateway_of_uri, gateway_uri
from services.common.crypto import Cipher
from services.common.internal_ca import CLOCK_SKEW, XDS_SERVER_NAME, InternalCA


def sans(certificate_pem: bytes) -> list[str]:
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]


def test_the_ca_is_kept_with_its_key_encrypted_and_read_back_with_the_same_key() -> None:
    cipher = Cipher(Fernet.generate_key())
    made = InternalCA.create()
    certificate_pem, key_encrypted = made.sealed(cipher)
    assert b"PRIVATE KEY" not in key_encrypted
    again = InternalCA.unsealed(certificate_pem, key_encrypted, cipher)
    assert again.certificate_pem == made.certificate_pem
    assert again.client_certificate("gw-1").ca_pem == made.certificate_pem
    with pytest.raises(SystemExit, match="GATEHOUSE_ENCRYPTION_KEY"):
        InternalCA.unsealed(certificate_pem, key_encrypted, Cipher(Fernet.generate_key()))


def test_a_client_certificate_names_its_gateway() -> None:
    issued = InternalCA.create().client_certificate("gw-1")
    certificate = x509.load_pem_x509_certificate(issued.certificate_pem)
    assert sans(issued.certificate_pem) == [gateway_uri("gw-1")]
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-1"


def test_the_server_certificate_covers_the_xds_names() -> None:
    issued = InternalCA.create().server_certificate(["xds.example.com", "0.0.0.0", "10.0.0.5"])
    assert sorted(sans(issued.certificate_pem)) == sorted(
        [XDS_SERVER_NAME, "localhost", "127.0.0.1", "xds.example.com", "10.0.0.5"]
    )


def test_a_certificate_request_is_signed_for_the_gateway_it_is_for() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
        .sign(key, hashes.SHA256())
    )
    certificate_pem = InternalCA.create().sign_request(
        request.public_bytes(serialization.Encoding.PEM), "gw-2"
    )
    assert sans(certificate_pem) == [gateway_uri("gw-2")]


def test_issued_certificates_last_as_long_as_the_ca_says() -> None:
    issued = InternalCA.create(leaf_validity=datetime.timedelta(hours=1)).client_certificate("gw-1")
    certificate = x509.load_pem_x509_certificate(issued.certificate_pem)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == datetime.timedelta(hours=1) + CLOCK_SKEW
    assert gateway_of_uri(gateway_uri("gw-1")) == "gw-1"
    assert gateway_of_uri("spiffe://elsewhere/gateway/gw-1") is None

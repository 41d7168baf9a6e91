"""The internal CA: made once and kept (key encrypted), and the identities it puts in certificates."""

import datetime
import multiprocessing
import stat
import time
from pathlib import Path

from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.common.crypto import Cipher
from services.common.internal_ca import (
    CLOCK_SKEW,
    XDS_SERVER_NAME,
    InternalCA,
    gateway_of_uri,
    gateway_uri,
)


def sans(certificate_pem: bytes) -> list[str]:
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]


def test_the_ca_is_made_once_with_its_key_encrypted(tmp_path: Path) -> None:
    cipher = Cipher(Fernet.generate_key())
    first = InternalCA.load_or_create(tmp_path / "ca", cipher)
    again = InternalCA.load_or_create(tmp_path / "ca", cipher)
    assert again.certificate_pem == first.certificate_pem
    key_file = tmp_path / "ca" / "ca.key.enc"
    assert b"PRIVATE KEY" not in key_file.read_bytes()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    issued = again.client_certificate("gw-1")
    assert issued.ca_pem == first.certificate_pem


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


def _load_in_a_process(directory: str, key: bytes, start: float, out: str) -> None:
    # Every process starts at the same moment, as gateway_xds and the provisioner may.
    while time.time() < start:
        pass
    ca = InternalCA.load_or_create(Path(directory), Cipher(key))
    Path(out).write_bytes(ca.certificate_pem)


def test_processes_making_the_ca_at_once_all_end_up_with_the_same_one(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    start = time.time() + 2.0
    outs = [tmp_path / f"seen-{n}.pem" for n in range(6)]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_load_in_a_process, args=(str(tmp_path / "ca"), key, start, str(out)))
        for out in outs
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert len({out.read_bytes() for out in outs}) == 1
    assert outs[0].read_bytes() == InternalCA.load_or_create(tmp_path / "ca", Cipher(key)).certificate_pem
    assert sorted(path.name for path in (tmp_path / "ca").iterdir()) == ["ca.key.enc", "ca.pem"]


def test_issued_certificates_last_as_long_as_the_ca_says() -> None:
    issued = InternalCA.create(leaf_validity=datetime.timedelta(hours=1)).client_certificate("gw-1")
    certificate = x509.load_pem_x509_certificate(issued.certificate_pem)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == datetime.timedelta(hours=1) + CLOCK_SKEW
    assert gateway_of_uri(gateway_uri("gw-1")) == "gw-1"
    assert gateway_of_uri("spiffe://elsewhere/gateway/gw-1") is None

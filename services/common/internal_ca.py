"""The control plane's own CA: gateway_xds's server certificate, each gateway's client certificate, and
the certificates of agent tunnels (gatehouse/agent_tunnels.py).

Made on first start in `$GATEHOUSE_HOME/server/ca/`: the certificate in clear, the key encrypted with
the registry's Cipher. A gateway's identity is the URI SAN `spiffe://gatehouse/gateway/<gateway_id>`
(and CN = gateway id); an agent's is the DNS SAN naming its service and gateway.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatehouse.agent_tunnels import agent_name
from gatehouse.gateway_identity import gateway_uri
from services.common.crypto import Cipher

# The name Envoys ask for (SNI) and check in the server certificate, whatever address they dial.
XDS_SERVER_NAME = "gatehouse-xds"
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=30)
# Both ends of an agent tunnel are TLS server and client: the agent dials the gateway, then the gateway
# opens its own TLS session to the agent over that connection.
TUNNEL_USAGES = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
# Back-dated a little so a host whose clock lags still accepts a fresh certificate.
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: bytes
    key_pem: bytes
    ca_pem: bytes


def certificate_not_after(certificate_pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(certificate_pem).not_valid_after_utc


def _uri(value: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(value)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _subject_alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class InternalCA:
    def __init__(
        self,
        certificate: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        leaf_validity: datetime.timedelta = LEAF_VALIDITY,
    ) -> None:
        """`leaf_validity`: how long the certificates it issues last (tests make short-lived ones)."""
        self._certificate = certificate
        self._key = key
        self._leaf_validity = leaf_validity

    def sealed(self, cipher: Cipher) -> tuple[bytes, bytes]:
        """The certificate, and the key encrypted with `cipher`: what the registry keeps."""
        return self.certificate_pem, cipher.encrypt(_key_pem(self._key).decode())

    @classmethod
    def unsealed(cls, certificate_pem: bytes, key_encrypted: bytes, cipher: Cipher) -> InternalCA:
        try:
            key_pem = cipher.decrypt(key_encrypted)
        except ValueError:
            raise SystemExit(
                "error: the internal CA's key cannot be decrypted with this process's encryption key: "
                "give every Gatehouse process the registry's GATEHOUSE_ENCRYPTION_KEY"
            ) from None
        key = serialization.load_pem_private_key(key_pem.encode(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(x509.load_pem_x509_certificate(certificate_pem), key)

    @classmethod
    def from_directory(cls, directory: Path, cipher: Cipher) -> InternalCA | None:
        """A CA kept in files by earlier versions (`ca.pem`, `ca.key.enc`), if there is one."""
        certificate_file, key_file = directory / "ca.pem", directory / "ca.key.enc"
        if not (certificate_file.exists() and key_file.exists()):
            return None
        return cls.unsealed(certificate_file.read_bytes(), key_file.read_bytes(), cipher)

    @classmethod
    def create(cls, leaf_validity: datetime.timedelta = LEAF_VALIDITY) -> InternalCA:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gatehouse internal CA")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - CLOCK_SKEW)
            .not_valid_after(_now() + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key, leaf_validity)

    @property
    def certificate_pem(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def server_certificate(self, hosts: list[str]) -> IssuedCertificate:
        """gateway_xds's certificate, valid for XDS_SERVER_NAME, localhost, 127.0.0.1 and `hosts`."""
        names = dict.fromkeys([XDS_SERVER_NAME, "localhost", "127.0.0.1", *[h for h in hosts if h]])
        sans = [_subject_alt_name(name) for name in names if name not in ("0.0.0.0", "::")]
        return self._issue(XDS_SERVER_NAME, sans, (ExtendedKeyUsageOID.SERVER_AUTH,))

    def client_certificate(self, gateway_id: str) -> IssuedCertificate:
        """A gateway's identity towards gateway_xds."""
        return self._issue(
            gateway_id,
            [x509.UniformResourceIdentifier(gateway_uri(gateway_id))],
            (ExtendedKeyUsageOID.CLIENT_AUTH,),
        )

    def sign_request(self, csr_pem: bytes, gateway_id: str) -> bytes:
        """A client certificate for a key the host made itself (the join-token exchange)."""
        certificate = self._sign(
            _requested_key(csr_pem),
            gateway_id,
            [x509.UniformResourceIdentifier(gateway_uri(gateway_id))],
            (ExtendedKeyUsageOID.CLIENT_AUTH,),
        )
        return certificate.public_bytes(serialization.Encoding.PEM)

    def derived_key(self, purpose: str) -> bytes:
        """A secret for `purpose` that every process holding the CA derives alike (and no one else)."""
        return self._derive(purpose, 32)

    def _derive(self, info: str, length: int) -> bytes:
        secret = self._key.private_numbers().private_value.to_bytes(32, "big")
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info.encode()).derive(secret)

    def tunnel_certificate(self, gateway_id: str, epoch: int) -> IssuedCertificate:
        """The gateway's identity towards its agents (their tunnels' TLS, both ways) for `epoch` (a
        third of a certificate's lifetime since 1970): the same key and certificate from every
        gateway_xds process and after every restart, derived from the CA's key, so Envoys are never
        sent a new one but when an epoch turns."""
        step = self._leaf_validity / 3
        material = self._derive(f"tunnel/{gateway_id}/{epoch}", 48)
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's group order
        key = ec.derive_private_key(int.from_bytes(material[:32], "big") % (order - 1) + 1, ec.SECP256R1())
        start = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + epoch * step
        certificate = (
            self._builder(
                key.public_key(),
                gateway_id,
                [x509.UniformResourceIdentifier(gateway_uri(gateway_id))],
                TUNNEL_USAGES,
            )
            .serial_number(int.from_bytes(material[32:], "big") >> 1 or 1)
            .not_valid_before(start - CLOCK_SKEW)
            .not_valid_after(start + self._leaf_validity)
            .sign(self._key, hashes.SHA256(), ecdsa_deterministic=True)
        )
        return IssuedCertificate(
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            ca_pem=self.certificate_pem,
        )

    def sign_agent_request(self, csr_pem: bytes, service_id: str, gateway_id: str) -> bytes:
        """An agent's certificate for a key it made itself: it may serve `service_id` on `gateway_id`."""
        name = agent_name(service_id, gateway_id)
        certificate = self._sign(_requested_key(csr_pem), name, [x509.DNSName(name)], TUNNEL_USAGES)
        return certificate.public_bytes(serialization.Encoding.PEM)

    def issued(self, certificate_pem: bytes) -> bool:
        """Whether this CA signed `certificate_pem`."""
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
            certificate.verify_directly_issued_by(self._certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def _issue(
        self, common_name: str, sans: list[x509.GeneralName], usages: tuple[x509.ObjectIdentifier, ...]
    ) -> IssuedCertificate:
        key = _new_key()
        certificate = self._sign(key.public_key(), common_name, sans, usages)
        return IssuedCertificate(
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            ca_pem=self.certificate_pem,
        )

    def _sign(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        sans: list[x509.GeneralName],
        usages: tuple[x509.ObjectIdentifier, ...],
    ) -> x509.Certificate:
        return (
            self._builder(public_key, common_name, sans, usages)
            .serial_number(int(uuid.uuid4()))
            .not_valid_before(_now() - CLOCK_SKEW)
            .not_valid_after(_now() + self._leaf_validity)
            .sign(self._key, hashes.SHA256())
        )

    def _builder(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        sans: list[x509.GeneralName],
        usages: tuple[x509.ObjectIdentifier, ...],
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._certificate.subject)
            .public_key(public_key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )


def _requested_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The key of a certificate request whose signature shows its sender holds the private key."""
    request = x509.load_pem_x509_csr(csr_pem)
    if not request.is_signature_valid:
        raise ValueError("the certificate request's signature is not valid")
    public_key = request.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("the certificate request must carry an EC key")
    return public_key


def xds_server_credentials(ca: InternalCA, hosts: list[str]) -> grpc.ServerCredentials:
    """TLS for gateway_xds that requires a client certificate signed by the CA."""
    server = ca.server_certificate(hosts)
    return grpc.ssl_server_credentials(
        [(server.key_pem, server.certificate_pem)],
        root_certificates=ca.certificate_pem,
        require_client_auth=True,
    )


def gateway_channel_credentials(issued: IssuedCertificate) -> grpc.ChannelCredentials:
    """What a client with a gateway's identity presents to gateway_xds (tests, tools)."""
    return grpc.ssl_channel_credentials(issued.ca_pem, issued.key_pem, issued.certificate_pem)


class GatewayTunnelIdentities:
    """Each gateway's certificate towards its agents (gateway_xds sends it over SDS), issued when first
    asked for and again once a third of its lifetime is left; `port` is where gateways take tunnels."""

    def __init__(self, ca: InternalCA, port: int) -> None:
        self._ca = ca
        self.port = port
        self._issued: dict[str, tuple[int, IssuedCertificate]] = {}

    def certificate(self, gateway_id: str) -> tuple[str, str]:
        step = self._ca._leaf_validity / 3
        epoch = int((_now() - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)) / step)
        held = self._issued.get(gateway_id)
        if held is None or held[0] != epoch:
            held = self._issued[gateway_id] = (epoch, self._ca.tunnel_certificate(gateway_id, epoch))
        return held[1].certificate_pem.decode(), held[1].key_pem.decode()

    def trusted_ca(self) -> str:
        return self._ca.certificate_pem.decode()

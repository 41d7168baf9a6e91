"""HTTPS requests to loopback with a chosen SNI name, verified against a given CA, reporting which
certificate the server presented."""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass, field

from cryptography import x509


@dataclass(frozen=True)
class TlsAnswer:
    """Status 0 and the error as the body when nothing answered."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    serial: int | None = None  # of the certificate the server presented
    not_before: float | None = None  # its start, seconds since the epoch


class SniConnection(http.client.HTTPSConnection):
    """An HTTPS connection to `address` that says `server_name` in its ClientHello and verifies the
    certificate for that name (http.client would use the address for both)."""

    def __init__(self, address: str, port: int, server_name: str, ca_pem: str, timeout: float = 5.0) -> None:
        context = ssl.create_default_context(cadata=ca_pem)
        super().__init__(address, port, context=context, timeout=timeout)
        self.server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_name)  # type: ignore[attr-defined]

    def get(self, path: str = "/", headers: dict[str, str] | None = None) -> TlsAnswer:
        """A request on this (kept-alive) connection."""
        self.request("GET", path, headers={"Host": self.server_name, **(headers or {})})
        response = self.getresponse()
        body = response.read().decode(errors="replace")
        headers = {k.lower(): v for k, v in response.getheaders()}
        presented = self.certificate
        if presented is None:
            return TlsAnswer(response.status, body, headers)
        return TlsAnswer(
            response.status,
            body,
            headers,
            presented.serial_number,
            presented.not_valid_before_utc.timestamp(),
        )

    @property
    def serial(self) -> int | None:
        presented = self.certificate
        return presented.serial_number if presented is not None else None

    @property
    def certificate(self) -> x509.Certificate | None:
        der = self.sock.getpeercert(binary_form=True) if self.sock is not None else None
        return x509.load_der_x509_certificate(der) if der else None


def fetch_tls(
    port: int,
    server_name: str,
    ca_pem: str,
    path: str = "/",
    headers: dict[str, str] | None = None,
    address: str = "127.0.0.1",
    timeout: float = 5.0,
) -> TlsAnswer:
    """One request on a new connection."""
    connection = SniConnection(address, port, server_name, ca_pem, timeout)
    try:
        return connection.get(path, headers)
    except (OSError, http.client.HTTPException) as error:
        return TlsAnswer(0, repr(error))
    finally:
        connection.close()

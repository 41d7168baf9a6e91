"""A self-signed certificate for 127.0.0.1, for fakes whose SDKs insist on HTTPS."""

from __future__ import annotations

import ssl
from pathlib import Path

from tests.support.certs import self_signed


def loopback_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1 and the certificate file clients trust it with."""
    cert_path, key_path = self_signed(directory, "fake")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path

"""Settings of the certificates service, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True)
class CertificateSettings:
    directory_url: str = LETS_ENCRYPT
    # A CA file to trust for the ACME server's own TLS (a private CA, Pebble in tests).
    ca_bundle: str | None = None
    email: str | None = None
    eab_kid: str | None = None
    eab_hmac_key: str | None = None
    # host:port of the DNS server used to check that names resolve to their gateway.
    dns_server: str | None = None
    # "route53" makes one wildcard certificate per gateway through DNS-01.
    dns_provider: str | None = None

    @classmethod
    def from_env(cls) -> CertificateSettings:
        env = os.environ.get
        return cls(
            directory_url=env("GATEHOUSE_ACME_DIRECTORY") or LETS_ENCRYPT,
            ca_bundle=env("GATEHOUSE_ACME_CA_BUNDLE") or None,
            email=env("GATEHOUSE_ACME_EMAIL") or None,
            eab_kid=env("GATEHOUSE_ACME_EAB_KID") or None,
            eab_hmac_key=env("GATEHOUSE_ACME_EAB_HMAC_KEY") or None,
            dns_server=env("GATEHOUSE_DNS_SERVER") or None,
            dns_provider=env("GATEHOUSE_DNS_PROVIDER") or None,
        )

"""What an issuer returns, and the seam challenge solvers plug into."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from gatehouse.v1 import resources_pb2


class IssueError(Exception):
    """Issuance failed for a reason the certificate's status shows."""


@dataclass(frozen=True)
class IssuedCertificate:
    chain_pem: str
    key_pem: str
    not_before: datetime.datetime
    not_after: datetime.datetime

    @property
    def renew_after(self) -> datetime.datetime:
        """Two thirds into the lifetime."""
        return self.not_before + (self.not_after - self.not_before) * 2 / 3

    @classmethod
    def from_pem(cls, chain_pem: str, key_pem: str) -> IssuedCertificate:
        leaf = x509.load_pem_x509_certificate(chain_pem.encode())
        return cls(chain_pem, key_pem, leaf.not_valid_before_utc, leaf.not_valid_after_utc)


class ChallengeSolver(Protocol):
    """Makes the CA's check for one name pass, then cleans up."""

    kind: str

    async def present(
        self, gateway: resources_pb2.Gateway, hostname: str, token: str, validation: str
    ) -> None: ...

    async def cleanup(self, gateway: resources_pb2.Gateway, hostname: str, token: str) -> None: ...

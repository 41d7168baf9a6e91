"""Leases: which copy of a process does a role's work. A holder's writes to the registry carry its
claim in metadata; the registry refuses a claim whose fence is not the lease's current one, so a copy
that lost its lease cannot undo what its successor does."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

METADATA_KEY = "gatehouse-lease"
# A holder that stops renewing loses its lease this long after its last renewal; a standby copy asks
# every RENEW_SECONDS, so a role is taken over within LEASE_SECONDS + RENEW_SECONDS of a crash.
LEASE_SECONDS = 6.0
RENEW_SECONDS = 2.0


@dataclass(frozen=True)
class LeaseClaim:
    role: str
    fence: int

    def header(self) -> tuple[str, str]:
        return METADATA_KEY, f"{self.role}={self.fence}"

    @classmethod
    def parse(cls, value: str) -> LeaseClaim | None:
        role, _, fence = value.partition("=")
        if not role or not fence.isdigit():
            return None
        return cls(role, int(fence))


# Set by a process for the work it does as a lease's holder; every call it makes carries it.
held_claim: contextvars.ContextVar[LeaseClaim | None] = contextvars.ContextVar(
    "gatehouse_held_lease", default=None
)

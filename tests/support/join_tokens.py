"""Join tokens for tests that run one provisioner: a fresh key, used tokens kept in memory (as the
registry keeps them for every copy)."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable

from services.provisioner.join import TOKEN_LIFETIME, JoinTokens, _now


class MemoryRedemptions:
    def __init__(self) -> None:
        self._used: set[str] = set()

    def used(self, digest: str) -> bool:
        return digest in self._used

    async def use(self, digest: str, expires_at: float) -> bool:
        before = digest in self._used
        self._used.add(digest)
        return before


def local_join_tokens(
    lifetime: datetime.timedelta = TOKEN_LIFETIME, clock: Callable[[], datetime.datetime] = _now
) -> JoinTokens:
    return JoinTokens(secrets.token_bytes(32), MemoryRedemptions(), lifetime, clock)

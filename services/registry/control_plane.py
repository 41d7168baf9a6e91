"""Key material the copies of the control plane share, kept in the registry's database: the
internal CA (its key encrypted with the registry's key) and the join tokens already used."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.crypto import Cipher
from services.common.internal_ca import InternalCA
from services.registry import feed
from services.registry.models import ControlPlaneSecretRow, RedeemedJoinTokenRow

INTERNAL_CA = "internal-ca"


async def ensure_internal_ca(session: AsyncSession, cipher: Cipher, legacy_directory: Path) -> None:
    """Made on first start (or taken over from the files earlier versions kept in `legacy_directory`,
    so that gateways keep their certificates); the caller holds the bootstrap lock."""
    if await session.get(ControlPlaneSecretRow, INTERNAL_CA) is not None:
        return
    ca = InternalCA.from_directory(legacy_directory, cipher) or InternalCA.create()
    certificate_pem, key_encrypted = ca.sealed(cipher)
    session.add(
        ControlPlaneSecretRow(name=INTERNAL_CA, public=certificate_pem, private_encrypted=key_encrypted)
    )


async def sealed_internal_ca(session: AsyncSession) -> tuple[bytes, bytes] | None:
    row = await session.get(ControlPlaneSecretRow, INTERNAL_CA)
    return None if row is None else (row.public, row.private_encrypted)


async def join_token_used(session: AsyncSession, digest: str) -> bool:
    return await session.get(RedeemedJoinTokenRow, digest) is not None


async def redeem_join_token(session: AsyncSession, digest: str, expires_at: float) -> bool:
    """Remembers a join token as used until it expires; whether it had been used before (two copies
    redeeming one token at once: one of them is told so, by the primary key)."""
    feed.touch_nothing_read(session)
    await session.execute(delete(RedeemedJoinTokenRow).where(RedeemedJoinTokenRow.expires_at < time.time()))
    if await join_token_used(session, digest):
        return True
    session.add(RedeemedJoinTokenRow(digest=digest, expires_at=expires_at))
    await session.flush()
    return False

"""Follow: a read's answer now, then again each time it changes, for clients that would otherwise
poll Get until a condition holds (a service live, a gateway's Envoys on a revision)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from services.registry.feed import Broadcaster

M = TypeVar("M", bound=Message)
# Reads again this long after the last write heard of, in case a change came in no write's wake.
LOOK_AGAIN_SECONDS = 5.0


async def follow(broadcaster: Broadcaster, read: Callable[[], Awaitable[M]]) -> AsyncIterator[M]:
    """`read`'s answer, then each different one after a write (this copy's or another's, heard);
    ends with `read`'s error (NotFound once the resource is deleted)."""
    last: bytes | None = None
    while True:
        waiter = broadcaster.arm()  # armed before the read: no write slips between the two
        current = await read()
        encoded = current.SerializeToString(deterministic=True)
        if encoded != last:
            last = encoded
            yield current
        await broadcaster.wait(waiter, LOOK_AGAIN_SECONDS)

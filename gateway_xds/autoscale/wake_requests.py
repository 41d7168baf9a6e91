"""Requests to wake a service, from whichever copy holds a request for it to the copy whose
autoscaler leads (the only one that scales): in memory for one process, a Redis stream for copies."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol, cast

from gateway_xds.shared.redis import SharedRedis

# What XREAD answers (responses decoded): per stream read, its name and its entries' ids and fields.
StreamEntries = list[tuple[str, list[tuple[str, dict[str, str]]]]]

# How long a leader waits for requests per call; Redis's own timeout is longer (shared/redis.py).
WAIT_SECONDS = 0.1
# Requests older than this are of no use to a leader that starts (their holders ask again).
KEEP_MS = 10_000


class WakeRequests(Protocol):
    async def ask(self, service_id: str) -> None: ...

    async def listen(self) -> None:
        """The leader takes requests from now on."""

    async def asked(self) -> set[str]:
        """The services asked for since the last call; waits a moment for one when there is none."""
        ...


class LocalWakeRequests:
    def __init__(self) -> None:
        self._asked: set[str] = set()
        self._arrived = asyncio.Event()

    async def ask(self, service_id: str) -> None:
        self._asked.add(service_id)
        self._arrived.set()

    async def listen(self) -> None:
        self._asked.clear()

    async def asked(self) -> set[str]:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(WAIT_SECONDS):
                await self._arrived.wait()
        self._arrived.clear()
        asked, self._asked = self._asked, set()
        return asked


class RedisWakeRequests:
    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared
        self._stream = shared.key("wake")
        self._last_id = "0"

    async def ask(self, service_id: str) -> None:
        async with self._shared.client.pipeline(transaction=False) as pipeline:
            pipeline.xadd(self._stream, {"service": service_id}, maxlen=1000, approximate=True)
            pipeline.pexpire(self._stream, KEEP_MS)
            await self._shared.call("wake from zero", pipeline.execute())

    async def listen(self) -> None:
        seconds, micros = await self._shared.call("wake from zero", self._shared.client.time())
        self._last_id = f"{seconds * 1000 + micros // 1000}-0"

    async def asked(self) -> set[str]:
        block_ms = int(WAIT_SECONDS * 1000)
        read = self._shared.client.xread({self._stream: self._last_id}, block=block_ms)
        streams = cast(StreamEntries, await self._shared.call("wake from zero", read))
        asked = set()
        for entry_id, fields in streams[0][1] if streams else []:
            asked.add(fields["service"])
            self._last_id = entry_id
        return asked

"""How many streams may build bulk responses (a node's first sync of a large type) at once, and giving
back the memory a burst of them leaves behind.

A first sync of 10,000 services is about 1.5 MB per type. Once glibc has freed a chunk that large it
serves the next ones from its heaps instead of fresh mappings (its mmap threshold rises to the
largest chunk freed), and keeps freed pages that are not at the top of a heap. When the last bulk
stream is done, `malloc_trim` hands them back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType

from gateway_xds.memory import release_free_heap

log = logging.getLogger(__name__)

# Time for gRPC to write out (and free) the last bulk responses before the heap is trimmed.
SETTLE_SECONDS = 1.0


class BulkGate:
    """`async with gate:` around building and sending a bulk response."""

    def __init__(
        self,
        streams: int,
        settle_seconds: float = SETTLE_SECONDS,
        release: Callable[[], bool] = release_free_heap,
    ) -> None:
        self._semaphore = asyncio.Semaphore(streams)
        self._settle_seconds = settle_seconds
        self._release = release
        self._holders = 0
        self._trim: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()
        self._holders += 1
        if self._trim is not None:
            self._trim.cancel()
            self._trim = None

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._holders -= 1
        self._semaphore.release()
        if self._holders == 0 and self._trim is None:
            self._trim = asyncio.get_running_loop().call_later(self._settle_seconds, self._trimmed)

    def _trimmed(self) -> None:
        self._trim = None
        if self._holders == 0 and self._release():
            log.debug("returned the free heap to the system after bulk responses")

"""A work queue stops even when a handler swallowed its cancellation (as Python 3.11's wait_for can)."""

from __future__ import annotations

import asyncio
import contextlib

from services.common.workqueue import Result, WorkQueue


async def test_stop_ends_a_worker_whose_handler_swallowed_the_cancellation() -> None:
    started = asyncio.Event()

    async def swallowing(key: str) -> Result:
        started.set()
        # What a racing wait_for does: the cancellation is lost and the handler returns.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return Result()

    queue = WorkQueue("test", swallowing, workers=1)
    queue.start()
    queue.add("key")
    await started.wait()
    async with asyncio.timeout(2):
        await queue.stop()

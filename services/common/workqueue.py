"""A keyed work queue for reconcilers: a key is queued once, handled by one worker at a time,
retried with backoff on error, and looked at again when the handler asks to."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gatehouse.leadership import Leadership
from services.common.process_metrics import observe_reconcile

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Result:
    """What a reconcile says about when to look again (None: only when something changes)."""

    requeue_after: float | None = None


Handler = Callable[[str], Awaitable[Result]]


class WorkQueue:
    def __init__(self, name: str, handler: Handler, workers: int = 4) -> None:
        self._name = name
        self._handler = handler
        self._workers = workers
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: str) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"{self._name}-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            started = time.perf_counter()
            try:
                result = await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                observe_reconcile(self._name, False, time.perf_counter() - started)
                failures = self._failures.get(key, 0)
                self._failures[key] = failures + 1
                delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
                log.exception("%s: reconciling %s failed; again in %.1fs", self._name, key, delay)
                self.add_after(key, delay)
            else:
                observe_reconcile(self._name, True, time.perf_counter() - started)
                self._failures.pop(key, None)
                if result.requeue_after is not None:
                    self.add_after(key, result.requeue_after)
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
            # A handler whose cancellation was swallowed on the way (Python 3.11's wait_for can, when
            # what it waits for finishes as it is cancelled) must not keep the worker, and with it a
            # stopping server, waiting for the next key for ever.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise asyncio.CancelledError


async def run_queues(
    queues: Sequence[WorkQueue],
    resync: Callable[[], Awaitable[None]],
    leadership: Leadership | None,
    stopped: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """A reconciler's work queues run only while this copy leads (always, without `leadership`);
    each time it starts leading, everything is looked at afresh (a predecessor may have stopped
    half-way, and timers set by it are gone). `stopped` ends what the work started besides."""

    async def lead() -> None:
        for queue in queues:
            queue.start()
        try:
            await resync()
            await asyncio.Event().wait()
        finally:
            for queue in queues:
                await queue.stop()
            if stopped is not None:
                await stopped()

    if leadership is None:
        await lead()
    else:
        await leadership.run(lead)

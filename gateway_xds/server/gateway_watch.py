"""One watch per gateway, not per stream: a task waits for the gateway's next snapshot and hands it to
every stream serving the gateway in one go, so a change wakes the event loop once rather than once
per Envoy, and the streams' pushes are built back to back."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.server.watcher import ConfigWatcher

log = logging.getLogger(__name__)


class SnapshotListener(Protocol):
    def snapshot_changed(self, snapshot: Snapshot) -> None:
        """The gateway's snapshot is now `snapshot`; must return quickly and not raise."""
        ...

    def watch_failed(self) -> None:
        """Watching the gateway failed: no more snapshots will come."""
        ...


class _Watch:
    __slots__ = ("latest", "listeners", "task")

    def __init__(self, latest: Snapshot | None) -> None:
        self.latest = latest
        # A dict as an ordered set: streams hear of a change in the order they joined.
        self.listeners: dict[SnapshotListener, None] = {}
        self.task: asyncio.Task[None] | None = None


class GatewayWatches:
    def __init__(self, watcher: ConfigWatcher) -> None:
        self._watcher = watcher
        self._watches: dict[str, _Watch] = {}

    def current(self, gateway_id: str) -> Snapshot | None:
        return self._watcher.get(gateway_id)

    def join(self, gateway_id: str, listener: SnapshotListener) -> None:
        """`listener` hears of every snapshot of the gateway after the current one (`watcher.get`)."""
        watch = self._watches.get(gateway_id)
        if watch is None:
            watch = self._watches[gateway_id] = _Watch(self._watcher.get(gateway_id))
            watch.task = asyncio.create_task(self._run(gateway_id, watch))
        watch.listeners[listener] = None

    def leave(self, gateway_id: str, listener: SnapshotListener) -> None:
        watch = self._watches.get(gateway_id)
        if watch is None:
            return
        watch.listeners.pop(listener, None)
        if not watch.listeners:
            del self._watches[gateway_id]
            if watch.task is not None:
                watch.task.cancel()

    def watching(self, gateway_id: str) -> int:
        """How many streams listen to the gateway's changes."""
        watch = self._watches.get(gateway_id)
        return len(watch.listeners) if watch is not None else 0

    async def _run(self, gateway_id: str, watch: _Watch) -> None:
        try:
            while True:
                watch.latest = await self._watcher.wait_for_change(gateway_id, watch.latest)
                for listener in list(watch.listeners):
                    listener.snapshot_changed(watch.latest)
        except Exception:
            log.exception("watching gateway %s failed; ending its streams", gateway_id)
            if self._watches.get(gateway_id) is watch:
                del self._watches[gateway_id]
            for listener in list(watch.listeners):
                listener.watch_failed()

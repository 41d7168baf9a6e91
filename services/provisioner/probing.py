"""Probes of running replicas, each in a task of its own: a replica whose probes start failing
leaves the endpoints (the runner registers it not ready; Envoy lets its requests in flight finish)
and comes back once they pass again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gatehouse.v1 import resources_pb2
from services.provisioner.readiness import Streaks, interval, probe_round

log = logging.getLogger(__name__)

# Called with the replica's id and whether it now takes traffic.
OnChange = Callable[[str, bool], Awaitable[None]]


@dataclass
class Watched:
    task: asyncio.Task[None]
    streaks: Streaks


class ReplicaProbes:
    def __init__(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._watched: dict[str, Watched] = {}

    def ready(self, replica_id: str) -> bool:
        watched = self._watched.get(replica_id)
        return watched is not None and watched.streaks.ready

    def reason(self, replica_id: str) -> str:
        watched = self._watched.get(replica_id)
        return watched.streaks.reason if watched is not None else ""

    def watching(self, replica_id: str) -> bool:
        return replica_id in self._watched

    def watch(
        self,
        replica_id: str,
        host: str,
        port: int,
        probes: Sequence[resources_pb2.Probe],
        streaks: Streaks,
        alive: Callable[[], bool],
        at_once: bool = False,
    ) -> None:
        """Keeps probing a replica (`streaks` as they stand) while `alive()`, every interval; the
        first time at once with `at_once`, else after an interval."""
        self.stop(replica_id)
        probes = list(probes)
        task = asyncio.create_task(self._run(replica_id, host, port, probes, streaks, alive, at_once))
        self._watched[replica_id] = Watched(task, streaks)

    async def _run(
        self,
        replica_id: str,
        host: str,
        port: int,
        probes: list[resources_pb2.Probe],
        streaks: Streaks,
        alive: Callable[[], bool],
        at_once: bool,
    ) -> None:
        pause = interval(probes)
        first = True
        while alive():
            if not (first and at_once):
                await asyncio.sleep(pause)
            first = False
            if all(probe.until_ready for probe in probes) and streaks.ready:
                return
            before = streaks.ready
            try:
                now = await probe_round(host, port, probes, streaks)
                if now != before:
                    how = "passes its probes" if now else f"fails its probes: {streaks.reason}"
                    log.info("replica %s %s", replica_id, how)
                    await self._on_change(replica_id, now)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("probing replica %s", replica_id)

    def stop(self, replica_id: str) -> None:
        watched = self._watched.pop(replica_id, None)
        if watched is not None:
            watched.task.cancel()

    async def close(self) -> None:
        tasks = [watched.task for watched in self._watched.values()]
        self._watched.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

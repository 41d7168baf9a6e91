"""The current snapshot of every gateway, and change notification for the streams serving it."""

import asyncio
from collections.abc import Callable

from gateway_xds.cache.snapshot import Snapshot


class InconsistentSnapshotError(ValueError):
    def __init__(self, gateway_id: str, errors: list[str]) -> None:
        super().__init__(f"inconsistent snapshot for gateway {gateway_id!r}: " + "; ".join(errors))
        self.gateway_id = gateway_id
        self.errors = errors


class SnapshotCache:
    """Gateway id -> current Snapshot. Not thread-safe: use it from the event loop of the xDS server."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        # Set (and dropped) at the gateway's next change.
        self._changes: dict[str, asyncio.Event] = {}
        # Told (gateway id, revision) of each snapshot published, to time the Envoys' ACKs.
        self.on_publish: Callable[[str, int], None] | None = None

    def set_snapshot(self, gateway_id: str, snapshot: Snapshot) -> None:
        """Publish a snapshot; raises InconsistentSnapshotError (a ValueError) and keeps the old one if
        the snapshot has dangling references."""
        errors = snapshot.consistent()
        if errors:
            raise InconsistentSnapshotError(gateway_id, errors)
        self._snapshots[gateway_id] = snapshot
        self._wake(gateway_id)
        if self.on_publish is not None:
            self.on_publish(gateway_id, snapshot.revision)

    def get(self, gateway_id: str) -> Snapshot | None:
        return self._snapshots.get(gateway_id)

    def gateway_ids(self) -> set[str]:
        return set(self._snapshots)

    def clear(self, gateway_id: str) -> None:
        """Forget a gateway that went away; its connected Envoys are sent an empty configuration."""
        if self._snapshots.pop(gateway_id, None) is not None:
            self._wake(gateway_id)

    async def wait_for_change(self, gateway_id: str, after: Snapshot | None) -> Snapshot:
        """Return as soon as the gateway's snapshot is not `after` (the last one the caller has seen).

        A gateway cleared after the caller saw a non-empty snapshot yields an empty snapshot.
        """
        while True:
            current = self._snapshots.get(gateway_id)
            if current is not None and current is not after:
                return current
            if current is None and after is not None and not after.is_empty:
                return Snapshot.empty(after.revision)
            await self._changes.setdefault(gateway_id, asyncio.Event()).wait()

    def _wake(self, gateway_id: str) -> None:
        change = self._changes.pop(gateway_id, None)
        if change is not None:
            change.set()

"""Which Envoys of each gateway are connected and which revision each has applied, for code in this
process that must wait until a change is live (the wake check); reports go on to another reporter."""

from __future__ import annotations

import asyncio

from gateway_xds.server.reporter import Rejection, SyncReporter


class EnvoySync:
    """A SyncReporter that remembers, notifies waiters, and forwards every report to `then`."""

    def __init__(self, then: SyncReporter) -> None:
        self._then = then
        # gateway id -> node id -> acknowledged revision, for connected nodes
        self._acked: dict[str, dict[str, int]] = {}
        self._changed = asyncio.Event()

    def connected(self, node_id: str, gateway_id: str) -> None:
        self._acked.setdefault(gateway_id, {}).setdefault(node_id, 0)
        self._notify()
        self._then.connected(node_id, gateway_id)

    def disconnected(self, node_id: str, gateway_id: str) -> None:
        nodes = self._acked.get(gateway_id, {})
        nodes.pop(node_id, None)
        if not nodes:
            self._acked.pop(gateway_id, None)
        self._notify()
        self._then.disconnected(node_id, gateway_id)

    def acked(self, node_id: str, gateway_id: str, revision: int) -> None:
        nodes = self._acked.setdefault(gateway_id, {})
        nodes[node_id] = max(nodes.get(node_id, 0), revision)
        self._notify()
        self._then.acked(node_id, gateway_id, revision)

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        self._then.rejected(node_id, gateway_id, type_url, version, message)

    def rejections(self, node_id: str, gateway_id: str, rejected: tuple[Rejection, ...]) -> None:
        self._then.rejections(node_id, gateway_id, rejected)

    def all_acked(self, gateway_id: str, revision: int) -> bool:
        """Whether every connected Envoy of the gateway has applied `revision` (true with none)."""
        return all(acked >= revision for acked in self._acked.get(gateway_id, {}).values())

    async def changed(self) -> None:
        """Return at the next report (check the state first: reports before this call do not count)."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

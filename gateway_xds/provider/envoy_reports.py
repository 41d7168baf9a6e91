"""Tells the registry what each Envoy has acknowledged or rejected, a few times a second at most."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import grpc

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.resources import short_name
from gateway_xds.server.reporter import Rejection
from gateway_xds.shared.redis import SharedStateUnavailable

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 0.05
# Of what one Envoy refuses, the resources the registry keeps, and Envoy's messages its text shows.
REPORTED_REJECTIONS = 100
SHOWN_MESSAGES = 3


class OtherCopies(Protocol):
    """The Envoys that stream from other copies of gateway_xds (gateway_xds/shared/acks.py)."""

    async def merged(
        self, gateway_id: str, own: Sequence[resources_pb2.EnvoyStatus]
    ) -> tuple[list[resources_pb2.EnvoyStatus], int]: ...

    async def version(self, gateway_id: str) -> int: ...


class RegistryReporter:
    """A SyncReporter whose state the registry shows on the gateway's status.

    With `others` (copies of gateway_xds), a report is every copy's Envoys of the gateway; it is made
    again when another copy changed them meanwhile, so the last report has them all."""

    def __init__(self, stubs: Stubs) -> None:
        self.others: OtherCopies | None = None
        self._stubs = stubs
        self._envoys: dict[str, dict[str, resources_pb2.EnvoyStatus]] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()

    def _envoy(self, node_id: str, gateway_id: str) -> resources_pb2.EnvoyStatus:
        self._dirty.add(gateway_id)
        self._wake.set()
        nodes = self._envoys.setdefault(gateway_id, {})
        if node_id not in nodes:
            nodes[node_id] = resources_pb2.EnvoyStatus(node_id=node_id)
        return nodes[node_id]

    def connected(self, node_id: str, gateway_id: str) -> None:
        self._envoy(node_id, gateway_id).connected = True

    def disconnected(self, node_id: str, gateway_id: str) -> None:
        self._envoy(node_id, gateway_id).connected = False

    def acked(self, node_id: str, gateway_id: str, revision: int) -> None:
        envoy = self._envoy(node_id, gateway_id)
        envoy.acked_revision = max(envoy.acked_revision, revision)

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        pass  # what the node refuses comes with `rejections`, which replace the last ones

    def rejections(self, node_id: str, gateway_id: str, rejected: tuple[Rejection, ...]) -> None:
        envoy = self._envoy(node_id, gateway_id)
        del envoy.rejected_resources[:]
        for rejection in rejected[:REPORTED_REJECTIONS]:
            envoy.rejected_resources.add(
                type=short_name(rejection.type_url), name=rejection.name, reason=rejection.reason
            )
        envoy.rejected = rejected_text(rejected)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for gateway_id in dirty:
                envoys, version = await self._everyones(gateway_id)
                request = registry_pb2.ReportEnvoysRequest(gateway_id=gateway_id, envoys=envoys)
                try:
                    await self._stubs.gateways.ReportEnvoys(request, timeout=10)
                except grpc.aio.AioRpcError as error:
                    log.warning("could not report Envoy status of %s: %s", gateway_id, error.details())
                    self._dirty.add(gateway_id)
                    self._wake.set()
                    continue
                if version is not None and await self._changed_since(gateway_id, version):
                    self._dirty.add(gateway_id)
                    self._wake.set()

    async def _everyones(self, gateway_id: str) -> tuple[list[resources_pb2.EnvoyStatus], int | None]:
        """The gateway's Envoys to report, and the version of the other copies' view they include."""
        own = list(self._envoys.get(gateway_id, {}).values())
        if self.others is not None:
            try:
                return await self.others.merged(gateway_id, own)
            except SharedStateUnavailable:
                pass  # this copy's own (warned already)
        return own, None

    async def _changed_since(self, gateway_id: str, version: int) -> bool:
        assert self.others is not None
        try:
            return await self.others.version(gateway_id) != version
        except SharedStateUnavailable:
            return False


def rejected_text(rejected: tuple[Rejection, ...]) -> str:
    """`config rejected: <Envoy's message>` (its distinct messages), shown as is on the gateway."""
    messages = list(dict.fromkeys(rejection.message for rejection in rejected))
    if not messages:
        return ""
    more = len(messages) - SHOWN_MESSAGES
    return (
        "config rejected: " + "; ".join(messages[:SHOWN_MESSAGES]) + (f" (+{more} more)" if more > 0 else "")
    )

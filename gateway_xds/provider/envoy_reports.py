"""Tells the registry what each Envoy has acknowledged or rejected, a few times a second at most."""

from __future__ import annotations

import asyncio
import logging

import grpc

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 0.05


class RegistryReporter:
    """A SyncReporter whose state the registry shows on the gateway's status."""

    def __init__(self, stubs: Stubs) -> None:
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
        envoy.rejected = ""

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        # Shown as is on the gateway's status; the resource type is in Envoy's own message.
        self._envoy(node_id, gateway_id).rejected = f"config rejected: {message}"

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for gateway_id in dirty:
                request = registry_pb2.ReportEnvoysRequest(
                    gateway_id=gateway_id, envoys=list(self._envoys.get(gateway_id, {}).values())
                )
                try:
                    await self._stubs.gateways.ReportEnvoys(request, timeout=10)
                except grpc.aio.AioRpcError as error:
                    log.warning("could not report Envoy status of %s: %s", gateway_id, error.details())
                    self._dirty.add(gateway_id)
                    self._wake.set()

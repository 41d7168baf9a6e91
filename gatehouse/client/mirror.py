"""A watch-fed, in-memory copy of the registry: list, then watch from the listed revision.

Reconcilers and gateway_xds read it; on "revision too old" or a lost connection it lists again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from gatehouse.v1 import registry_pb2, resources_pb2

log = logging.getLogger(__name__)

RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Change:
    """What one batch of events touched, by id (certificates by id, challenges by token)."""

    revision: int
    gateways: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    replicas: frozenset[str] = frozenset()
    certificates: frozenset[str] = frozenset()
    challenges: frozenset[str] = frozenset()
    credentials: frozenset[str] = frozenset()
    resync: bool = False


def _key(obj: Any) -> str:
    return str(obj.token) if isinstance(obj, resources_pb2.AcmeChallenge) else str(obj.id)


@dataclass
class RegistryMirror:
    revision: int = 0
    gateways: dict[str, resources_pb2.Gateway] = field(default_factory=dict)
    services: dict[str, resources_pb2.Service] = field(default_factory=dict)
    replicas: dict[str, resources_pb2.Replica] = field(default_factory=dict)
    certificates: dict[str, resources_pb2.TlsCertificate] = field(default_factory=dict)
    challenges: dict[str, resources_pb2.AcmeChallenge] = field(default_factory=dict)
    # Token and API key hashes with what they open (ids are the token's or key's id).
    credentials: dict[str, resources_pb2.Credential] = field(default_factory=dict)
    # The last state of objects removed, so reconcilers can clean up after them.
    removed_services: dict[str, resources_pb2.Service] = field(default_factory=dict)
    # Set once the first list is in: before it, an empty table says nothing about what exists.
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    def _tables(self) -> dict[str, dict[str, Any]]:
        return {
            "gateway": self.gateways,
            "service": self.services,
            "replica": self.replicas,
            "tls_certificate": self.certificates,
            "acme_challenge": self.challenges,
            "credential": self.credentials,
        }

    def load(self, snapshot: registry_pb2.SnapshotResponse) -> Change:
        before = {kind: set(table) for kind, table in self._tables().items()}
        for service_id, service in self.services.items():
            self.removed_services[service_id] = service
        self.revision = snapshot.revision
        self.loaded.set()
        self.gateways = {gw.id: gw for gw in snapshot.gateways}
        self.services = {svc.id: svc for svc in snapshot.services}
        self.replicas = {rep.id: rep for rep in snapshot.replicas}
        self.certificates = {cert.id: cert for cert in snapshot.tls_certificates}
        self.challenges = {challenge.token: challenge for challenge in snapshot.acme_challenges}
        self.credentials = {credential.id: credential for credential in snapshot.credentials}
        for service_id in self.services:
            self.removed_services.pop(service_id, None)
        touched = {kind: frozenset(before[kind] | set(table)) for kind, table in self._tables().items()}
        return Change(
            revision=self.revision,
            gateways=touched["gateway"],
            services=touched["service"],
            replicas=touched["replica"],
            certificates=touched["tls_certificate"],
            challenges=touched["acme_challenge"],
            credentials=touched["credential"],
            resync=True,
        )

    def apply(self, events: list[registry_pb2.WatchEvent]) -> Change:
        tables = self._tables()
        touched: dict[str, set[str]] = {kind: set() for kind in tables}
        for event in events:
            kind = event.WhichOneof("object")
            if kind is None:
                continue
            obj = getattr(event, kind)
            key = _key(obj)
            touched[kind].add(key)
            if event.type == registry_pb2.EVENT_TYPE_DELETE:
                tables[kind].pop(key, None)
                if kind == "service":
                    self.removed_services[key] = obj
            else:
                tables[kind][key] = obj
                if kind == "service":
                    self.removed_services.pop(key, None)
            self.revision = event.revision
        return Change(
            revision=self.revision,
            gateways=frozenset(touched["gateway"]),
            services=frozenset(touched["service"]),
            replicas=frozenset(touched["replica"]),
            certificates=frozenset(touched["tls_certificate"]),
            challenges=frozenset(touched["acme_challenge"]),
            credentials=frozenset(touched["credential"]),
        )

    def services_of(self, gateway_id: str) -> list[resources_pb2.Service]:
        return [svc for svc in self.services.values() if svc.spec.gateway_id == gateway_id]

    def replicas_of(self, service_id: str) -> list[resources_pb2.Replica]:
        return [rep for rep in self.replicas.values() if rep.service_id == service_id]

    def certificates_of(self, gateway_id: str) -> list[resources_pb2.TlsCertificate]:
        return [cert for cert in self.certificates.values() if cert.gateway_id == gateway_id]

    def challenges_of(self, gateway_id: str) -> list[resources_pb2.AcmeChallenge]:
        return [item for item in self.challenges.values() if item.gateway_id == gateway_id]


class WatchCalls(Protocol):
    """The registry's Watch service (its stub), as `follow` uses it."""

    def Snapshot(
        self, request: registry_pb2.SnapshotRequest, /
    ) -> Awaitable[registry_pb2.SnapshotResponse]: ...

    def Watch(
        self, request: registry_pb2.WatchRequest, /
    ) -> grpc.aio.UnaryStreamCall[registry_pb2.WatchRequest, registry_pb2.WatchEvent]: ...


async def follow(
    watch: WatchCalls,
    mirror: RegistryMirror,
    on_change: Callable[[Change], Awaitable[None]],
    batch_window: float = 0.0,
) -> None:
    """Keeps `mirror` current forever, calling `on_change` after the list and after each batch."""
    attempt = 0
    needs_list = True
    while True:
        try:
            if needs_list:
                snapshot = await watch.Snapshot(registry_pb2.SnapshotRequest())
                await on_change(mirror.load(snapshot))
                needs_list = False
            stream = watch.Watch(registry_pb2.WatchRequest(since_revision=mirror.revision))
            attempt = 0
            await _consume(stream, mirror, on_change, batch_window)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.OUT_OF_RANGE:
                needs_list = True
                continue
            if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise
            delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
            attempt += 1
            log.warning("registry watch interrupted (%s); again in %.1fs", error.code().name, delay)
            await asyncio.sleep(delay)


async def _consume(
    stream: grpc.aio.UnaryStreamCall[registry_pb2.WatchRequest, registry_pb2.WatchEvent],
    mirror: RegistryMirror,
    on_change: Callable[[Change], Awaitable[None]],
    batch_window: float,
) -> None:
    queue: asyncio.Queue[registry_pb2.WatchEvent | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in stream:
                queue.put_nowait(event)
        finally:
            queue.put_nowait(None)

    pumping = asyncio.create_task(pump())
    try:
        while True:
            first = await queue.get()
            if first is None:
                break
            batch = [first]
            if batch_window:
                await asyncio.sleep(batch_window)
            ended = False
            while not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    ended = True
                    break
                batch.append(item)
            await on_change(mirror.apply(batch))
            if ended:
                break
    finally:
        if not pumping.done():
            pumping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pumping  # raises the stream's error, if it ended with one

"""One copy at a time does a role's work: it runs while this copy holds the role's lease in the
registry, and is cancelled the moment the lease cannot be renewed in time. Every call the work
makes carries the lease's fence, so a copy that lost the lease (paused, cut off) has its writes
refused instead of undoing its successor's."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from gatehouse.client.connection import Stubs
from gatehouse.leases import LEASE_SECONDS, RENEW_SECONDS, LeaseClaim, held_claim
from gatehouse.v1 import registry_pb2

log = logging.getLogger(__name__)


def new_holder() -> str:
    """Unique per copy and per start: a restarted copy does not inherit its old lease."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


class Leadership:
    def __init__(
        self,
        stubs: Stubs,
        role: str,
        lease_seconds: float = LEASE_SECONDS,
        renew_seconds: float = RENEW_SECONDS,
    ) -> None:
        self._stubs = stubs
        self.role = role
        self.holder = new_holder()
        self._lease_seconds = lease_seconds
        self._renew_seconds = renew_seconds
        self.fence: int | None = None
        self._has_led = False

    async def _acquire(self) -> registry_pb2.Lease | None:
        request = registry_pb2.AcquireLeaseRequest(
            name=self.role, holder=self.holder, ttl_seconds=self._lease_seconds
        )
        try:
            lease: registry_pb2.Lease = await self._stubs.control_plane.AcquireLease(
                request, timeout=self._renew_seconds
            )
            return lease
        except grpc.aio.AioRpcError as error:
            log.warning("%s: cannot reach the registry for the lease: %s", self.role, error.details())
            return None

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Stands by until this copy holds the lease, runs `work` while it does, and stands by again
        when it loses it; releases the lease when cancelled (a clean stop hands over at once)."""
        try:
            while True:
                asked = time.monotonic()
                lease = await self._acquire()
                if lease is None or not lease.held:
                    await asyncio.sleep(self._renew_seconds)
                    continue
                await self._lead(lease, asked, work)
                # Lost the lease, or the work stopped by itself: ask again after a pause.
                await asyncio.sleep(self._renew_seconds)
        finally:
            if self._has_led:
                with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
                    release = registry_pb2.ReleaseLeaseRequest(name=self.role, holder=self.holder)
                    await asyncio.shield(self._stubs.control_plane.ReleaseLease(release, timeout=1.0))

    async def _lead(
        self, lease: registry_pb2.Lease, asked: float, work: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        self.fence = lease.fence
        self._has_led = True
        log.info("%s: this copy leads (fence %d)", self.role, lease.fence)
        # The lease lapses `remaining` after we asked at the latest: stop before that.
        valid_until = asked + lease.remaining_seconds
        token = held_claim.set(LeaseClaim(self.role, lease.fence))
        try:
            task = asyncio.create_task(work(), name=f"{self.role}-leader")
        finally:
            held_claim.reset(token)
        try:
            while not task.done():
                margin = self._renew_seconds / 2
                wait = max(0.0, min(self._renew_seconds, valid_until - time.monotonic() - margin))
                await asyncio.wait([task], timeout=wait)  # the work's own end (or error) is seen below
                if task.done():
                    break
                asked = time.monotonic()
                renewed = await self._acquire()
                if renewed is not None and renewed.held and renewed.fence == lease.fence:
                    valid_until = asked + renewed.remaining_seconds
                elif renewed is not None or time.monotonic() >= valid_until - margin:
                    log.warning("%s: this copy lost the lease; its work stops", self.role)
                    break
        finally:
            self.fence = None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s: the work stopped: %r; standing by", self.role, task.exception())

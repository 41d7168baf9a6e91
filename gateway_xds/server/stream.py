"""One ADS stream's plumbing, for both protocol variants: requests, snapshot changes and the push
throttle arrive on one queue and are handled in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, Generic

import grpc

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.server.bulk_gate import BulkGate
from gateway_xds.server.protocol import Request, Response, StreamProtocol
from gateway_xds.server.reporter import SyncReporter
from gateway_xds.server.stats import ServerStats, StreamInfo
from gateway_xds.server.throttle import PushThrottle
from gateway_xds.server.watcher import ConfigWatcher, NodeAuthorizer, NodeRejectedError

log = logging.getLogger(__name__)


class _End:
    """Queued when the node stops sending requests (or the stream broke)."""


class _Wake:
    """Queued when the gateway's snapshot changed or the throttle's delay is over."""


_END = _End()
_WAKE = _Wake()

ProtocolFactory = Callable[[str, str, SyncReporter], StreamProtocol[Request, Response]]


class AdsStream(Generic[Request, Response]):
    def __init__(
        self,
        protocol: str,
        make_state: ProtocolFactory[Request, Response],
        watcher: ConfigWatcher,
        authorizer: NodeAuthorizer,
        reporter: SyncReporter,
        stats: ServerStats,
        throttle: PushThrottle,
        bulk_gate: BulkGate,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self._protocol = protocol
        self._make_state = make_state
        self._watcher = watcher
        self._authorizer = authorizer
        self._reporter = reporter
        self._stats = stats
        self._throttle = throttle
        self._bulk_gate = bulk_gate
        self._context = context
        self._events: asyncio.Queue[Request | _End | _Wake] = asyncio.Queue()
        # Looked up once: on Python 3.11 each lookup of the running loop is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._latest: Snapshot | None = None
        self._wake_queued = False
        self._timer: asyncio.TimerHandle | None = None
        self._info: StreamInfo | None = None

    async def run(self, requests: AsyncIterable[Request]) -> AsyncIterator[Response]:
        tasks = [asyncio.create_task(self._read(requests))]
        state: StreamProtocol[Request, Response] | None = None
        try:
            while True:
                event = await self._events.get()
                if isinstance(event, _End):
                    return
                if isinstance(event, _Wake):
                    self._wake_queued = False
                    responses: list[Response] = []
                else:
                    if not event.type_url:  # type: ignore[attr-defined]
                        await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, "type_url is required")
                    if state is None:
                        state = await self._open(event)
                        tasks.append(asyncio.create_task(self._watch(state.gateway_id, state.snapshot)))
                    if state.expects_bulk(event):
                        # Built and sent while holding the gate: few streams hold a bulk response.
                        async with self._bulk_gate:
                            responses = state.on_request(event)
                            self._count(state, responses)
                            while responses:
                                yield responses.pop(0)
                    else:
                        responses = state.on_request(event)
                        self._count(state, responses)
                if state is not None:
                    pushed = self._maybe_push(state)
                    self._count(state, pushed)
                    responses += pushed
                    del pushed
                # Popped, not iterated: the generator's frame lives as long as the stream, and a
                # loop variable would keep the last response (megabytes for a first sync) alive.
                while responses:
                    yield responses.pop(0)
        except BaseException as error:
            log.debug("xDS stream of %s ended: %r", state.node_id if state else "an unknown node", error)
            raise
        finally:
            # The tasks catch their own errors, so nobody needs to await them.
            for task in tasks:
                task.cancel()
            if self._timer is not None:
                self._timer.cancel()
            if self._info is not None:
                self._info.open = False
            if state is not None:
                self._reporter.disconnected(state.node_id, state.gateway_id)

    def _maybe_push(self, state: StreamProtocol[Request, Response]) -> list[Response]:
        latest = self._latest
        if latest is None or latest is state.snapshot:
            self._throttle.changed = False
            return []
        now = self._loop.time()
        delay = self._throttle.delay(now, state.in_flight)
        if delay is None:
            return []
        if delay > 0:
            self._wake_after(delay)
            return []
        responses = state.on_snapshot(latest)
        self._throttle.pushed(now, bool(responses))
        if responses:
            state.counters.pushes += 1
            log.debug(
                "node %s: revision %d pushed in %d response(s)",
                state.node_id,
                latest.revision,
                len(responses),
            )
        return responses

    def _count(self, state: StreamProtocol[Request, Response], responses: list[Response]) -> None:
        for response in responses:
            state.counters.bytes_sent += response.ByteSize()

    def _wake_after(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        if not self._wake_queued:
            self._wake_queued = True
            self._events.put_nowait(_WAKE)

    async def _open(self, first: Request) -> StreamProtocol[Request, Response]:
        node = first.node  # type: ignore[attr-defined]
        try:
            if not node.id:
                raise NodeRejectedError(grpc.StatusCode.INVALID_ARGUMENT, "the first request has no node id")
            gateway_id = await self._authorizer.authorize(self._context, node)
        except NodeRejectedError as rejected:
            log.info("rejected xDS stream of node %r: %s", node.id, rejected.message)
            await self._context.abort(rejected.code, rejected.message)
        state = self._make_state(node.id, gateway_id, self._reporter)
        self._info = self._stats.opened(self._protocol, node.id, gateway_id, state.counters)
        self._reporter.connected(node.id, gateway_id)
        current = self._watcher.get(gateway_id)
        if current is not None:
            state.on_snapshot(current)  # nothing was requested yet, so this sends nothing
            self._latest = current
        return state

    async def _read(self, requests: AsyncIterable[Request]) -> None:
        try:
            async for request in requests:
                self._events.put_nowait(request)
        except Exception as error:
            log.debug("xDS stream read ended: %r", error)
        finally:
            self._events.put_nowait(_END)

    async def _watch(self, gateway_id: str, after: Snapshot | None) -> None:
        try:
            while True:
                after = await self._watcher.wait_for_change(gateway_id, after)
                self._latest = after
                self._throttle.note_change()
                # Changes arriving while one is queued coalesce: the stream pushes only the latest.
                self._wake()
        except Exception:
            log.exception("watching gateway %s failed; ending its stream", gateway_id)
            self._events.put_nowait(_END)

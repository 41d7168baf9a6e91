"""One ADS stream's plumbing, for both protocol variants.

Requests are handled as they are read, and a snapshot change as the gateway's watch hands it over
(gateway_watch.py): the stream's own task only wakes to send what they produced. What must await
(opening the stream, a bulk response behind the gate, aborting on a bad request) goes to the task
instead, and input that arrives meanwhile waits behind it, so everything is handled in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, Generic

import grpc

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.server.bulk_gate import BulkGate
from gateway_xds.server.gateway_watch import GatewayWatches
from gateway_xds.server.protocol import Request, Response, StreamProtocol
from gateway_xds.server.reporter import SyncReporter
from gateway_xds.server.stats import ServerStats, StreamInfo
from gateway_xds.server.throttle import PushThrottle
from gateway_xds.server.watcher import NodeAuthorizer, NodeRejectedError

log = logging.getLogger(__name__)


class _End:
    """Queued when the node stops sending requests (or the stream broke)."""


class _Failed:
    """Queued when handling input outside the stream's task raised: the stream ends with the error."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Deferred(Generic[Request]):
    """A request the stream's task handles itself."""

    def __init__(self, request: Request) -> None:
        self.request: Request | None = request


_END = _End()

ProtocolFactory = Callable[[str, str, SyncReporter], StreamProtocol[Request, Response]]


class AdsStream(Generic[Request, Response]):
    def __init__(
        self,
        protocol: str,
        make_state: ProtocolFactory[Request, Response],
        watches: GatewayWatches,
        authorizer: NodeAuthorizer,
        reporter: SyncReporter,
        stats: ServerStats,
        throttle: PushThrottle,
        bulk_gate: BulkGate,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self._protocol = protocol
        self._make_state = make_state
        self._watches = watches
        self._authorizer = authorizer
        self._reporter = reporter
        self._stats = stats
        self._throttle = throttle
        self._bulk_gate = bulk_gate
        self._context = context
        # What the stream's task is given: responses to send, or what only it can do.
        self._events: asyncio.Queue[list[Response] | _Deferred[Request] | _Failed | _End] = asyncio.Queue()
        # Looked up once: on Python 3.11 each lookup of the running loop is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._state: StreamProtocol[Request, Response] | None = None
        self._latest: Snapshot | None = None
        # Requests queued for the task and not handled yet: later input waits behind them.
        self._deferred = 0
        self._timer: asyncio.TimerHandle | None = None
        self._info: StreamInfo | None = None

    async def run(self, requests: AsyncIterable[Request]) -> AsyncIterator[Response]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                event = await self._events.get()
                if isinstance(event, _End):
                    return
                if isinstance(event, _Failed):
                    raise event.error
                if isinstance(event, list):
                    responses = event
                else:
                    # Not kept once handled: a first subscription can name every resource of the
                    # gateway (a megabyte at 10,000 services), and later requests do not come here.
                    request, event.request = event.request, None
                    assert request is not None, "a deferred request is handled once"
                    if not request.type_url:  # type: ignore[attr-defined]
                        await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT, "type_url is required")
                    state = self._state
                    if state is None:
                        state = self._state = await self._open(request)
                    if state.expects_bulk(request):
                        # Built and sent while holding the gate: few streams hold a bulk response.
                        async with self._bulk_gate:
                            responses = self._answer(state, request)
                            self._deferred -= 1
                            del request
                            while responses:
                                yield responses.pop(0)
                    else:
                        responses = self._answer(state, request)
                        self._deferred -= 1
                        del request
                    responses += self._push_if_due()
                # Popped, not iterated: the generator's frame lives as long as the stream, and a
                # loop variable would keep the last response (megabytes for a first sync) alive.
                while responses:
                    yield responses.pop(0)
        except BaseException as error:
            state = self._state
            log.debug("xDS stream of %s ended: %r", state.node_id if state else "an unknown node", error)
            raise
        finally:
            # The reader catches its own errors, so nobody needs to await it.
            reader.cancel()
            self._cancel_timer()
            if self._info is not None:
                self._info.open = False
            state = self._state
            if state is not None:
                self._watches.leave(state.gateway_id, self)
                self._reporter.disconnected(state.node_id, state.gateway_id)

    # -- input handled where it arrives ----------------------------------------------------------------

    async def _read(self, requests: AsyncIterable[Request]) -> None:
        try:
            async for request in requests:
                state = self._state
                if (
                    self._deferred
                    or state is None
                    or not request.type_url  # type: ignore[attr-defined]
                    or state.expects_bulk(request)
                ):
                    self._deferred += 1
                    self._events.put_nowait(_Deferred(request))
                    continue
                try:
                    responses = self._answer(state, request)
                    responses += self._push_if_due()
                except Exception as error:
                    self._events.put_nowait(_Failed(error))
                    return
                if responses:
                    self._events.put_nowait(responses)
        except Exception as error:
            log.debug("xDS stream read ended: %r", error)
        finally:
            self._events.put_nowait(_END)

    def snapshot_changed(self, snapshot: Snapshot) -> None:
        self._latest = snapshot
        self._throttle.note_change()
        # Changes arriving while the stream waits coalesce: it pushes only the latest.
        self._push_now()

    def watch_failed(self) -> None:
        self._events.put_nowait(_END)

    def _timer_fired(self) -> None:
        self._timer = None
        self._push_now()

    def _push_now(self) -> None:
        if self._deferred or self._state is None:
            return  # the task pushes once it has handled what waits
        try:
            responses = self._push_if_due()
        except Exception as error:
            self._events.put_nowait(_Failed(error))
            return
        if responses:
            self._events.put_nowait(responses)

    # -- the protocol ----------------------------------------------------------------------------------

    def _answer(self, state: StreamProtocol[Request, Response], request: Request) -> list[Response]:
        responses = state.on_request(request)
        self._count(state, responses)
        return responses

    def _push_if_due(self) -> list[Response]:
        state = self._state
        latest = self._latest
        if state is None:
            return []
        if latest is None or latest is state.snapshot:
            self._throttle.changed = False
            self._cancel_timer()
            return []
        now = self._loop.time()
        delay = self._throttle.delay(now, state.in_flight)
        if delay is None:
            self._cancel_timer()
            return []
        if delay > 0:
            self._wake_after(delay)
            return []
        self._cancel_timer()
        responses = state.on_snapshot(latest)
        self._throttle.pushed(now, bool(responses))
        if responses:
            state.counters.pushes += 1
            self._count(state, responses)
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
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, self._timer_fired)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

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
        current = self._watches.current(gateway_id)
        if current is not None:
            state.on_snapshot(current)  # nothing was requested yet, so this sends nothing
            self._latest = current
        self._watches.join(gateway_id, self)
        return state

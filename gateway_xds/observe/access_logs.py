"""Envoy's access logs (gRPC ALS) taken by gateway_xds: each entry is reduced to what an operator
reads (gatehouse/access_logs.py: no header, query values redacted), counted per Envoy for the
sampling in Envoy (log_sampling.py), sampled again per service under load here,
and passed on to the registry in batches (and, with GATEHOUSE_ACCESS_LOG_FILE, appended to a file as
JSON lines). Memory is bounded: at most MAX_PENDING entries wait for the registry."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from google.protobuf import json_format

from gatehouse import access_logs
from gatehouse.client.connection import Stubs
from gatehouse.private_files import make_private_directory
from gatehouse.v1 import registry_pb2
from gateway_xds.observe.log_sampling import LogSampling
from gateway_xds.observe.nodes import node_gateway
from gateway_xds.observe.responses import AnsweredRequests
from gateway_xds.server.server import ExtraService

log = logging.getLogger(__name__)

MAX_PENDING = 20_000
FLUSH_SECONDS = 0.5
MAX_BATCH = 2_000
FILE_ENV = "GATEHOUSE_ACCESS_LOG_FILE"


def _address(address: object) -> str:
    socket = address.socket_address  # type: ignore[attr-defined]
    if not socket.address:
        return ""
    host = f"[{socket.address}]" if ":" in socket.address else socket.address
    return f"{host}:{socket.port_value}"


def entry_of(log_entry: accesslog_pb2.HTTPAccessLogEntry) -> registry_pb2.AccessLogEntry:
    common, request = log_entry.common_properties, log_entry.request
    entry = registry_pb2.AccessLogEntry(
        method=base_pb2.RequestMethod.Name(request.request_method) if request.request_method else "",
        path=access_logs.redacted_path(request.original_path or request.path),
        status=log_entry.response.response_code.value,
        duration_ms=common.duration.ToMilliseconds() if common.HasField("duration") else 0.0,
        replica=_address(common.upstream_remote_address),
        client=_address(common.downstream_remote_address),
        backend=common.route_name,
    )
    entry.time.CopyFrom(common.start_time)
    return entry


class _Sampler:
    """At most `per_second` entries a second per key, the rest counted."""

    def __init__(self, per_second: int, clock: Callable[[], float]) -> None:
        self._per_second = per_second
        self._clock = clock
        # backend -> (second, kept in it, skipped since the last kept)
        self._seen: dict[str, tuple[int, int, int]] = {}

    def take(self, backend: str) -> int | None:
        """None: leave this one out; else how many were left out before it."""
        second = int(self._clock())
        was, kept, skipped = self._seen.get(backend, (second, 0, 0))
        if was != second:
            kept = 0
        if kept >= self._per_second:
            self._seen[backend] = (second, kept, skipped + 1)
            return None
        self._seen[backend] = (second, kept + 1, 0)
        if len(self._seen) > 100_000:
            self._seen.clear()
        return skipped


class AccessLogOutbox:
    def __init__(
        self,
        per_second: int = access_logs.SAMPLED_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
        file: Path | None = None,
        answered: AnsweredRequests | None = None,
    ) -> None:
        self._sampler = _Sampler(per_second, clock)
        # Every entry is counted (401s, 429s) before any is sampled out.
        self.answered = answered if answered is not None else AnsweredRequests()
        # gateway id -> entries for the registry
        self.pending: deque[tuple[str, registry_pb2.AccessLogEntry]] = deque(maxlen=MAX_PENDING)
        self._wake = asyncio.Event()
        self._file = file

    def add(
        self,
        gateway_id: str,
        log_entry: accesslog_pb2.HTTPAccessLogEntry,
        success_percent: float | None = None,
    ) -> None:
        """`success_percent`: the share of successes the Envoy logged then (None: not known)."""
        backend = log_entry.common_properties.route_name
        if not backend:
            return  # matched no service
        status = log_entry.response.response_code.value
        self.answered.logged(backend, status)
        # Errors have their own allowance: a flood of successes never crowds them out.
        kind = "error" if access_logs.is_error(status) else "success"
        skipped = self._sampler.take(f"{gateway_id}/{backend}/{kind}")
        if skipped is None:
            return
        entry = entry_of(log_entry)
        entry.skipped = skipped
        if success_percent is not None and success_percent < 100:
            entry.successes_logged_percent = success_percent
        self.pending.append((gateway_id, entry))
        self._wake.set()

    def take(self) -> dict[str, list[registry_pb2.AccessLogEntry]]:
        batches: dict[str, list[registry_pb2.AccessLogEntry]] = {}
        for _ in range(min(len(self.pending), MAX_BATCH)):
            gateway_id, entry = self.pending.popleft()
            batches.setdefault(gateway_id, []).append(entry)
        return batches

    async def run(self, stubs: Stubs) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_SECONDS)
            self._wake.clear()
            while self.pending:
                batches = self.take()
                for gateway_id, entries in batches.items():
                    self._append_to_file(gateway_id, entries)
                    request = registry_pb2.ReportAccessLogsRequest(gateway_id=gateway_id, entries=entries)
                    try:
                        await stubs.services.ReportAccessLogs(request, timeout=10)
                    except grpc.aio.AioRpcError as error:
                        log.warning("could not pass on access logs of %s: %s", gateway_id, error.details())

    def _append_to_file(self, gateway_id: str, entries: list[registry_pb2.AccessLogEntry]) -> None:
        if self._file is None:
            return
        lines = [
            json.dumps({"gateway_id": gateway_id, **json_format.MessageToDict(entry)}) + "\n"
            for entry in entries
        ]
        try:
            descriptor = os.open(self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(descriptor, "a") as out:
                out.writelines(lines)
        except OSError as error:
            log.warning("cannot write access logs to %s: %s", self._file, error.strerror)


def outbox_from_env() -> AccessLogOutbox:
    """The outbox the settings ask for; a bad setting stops the process before it serves."""
    path = os.environ.get(FILE_ENV)
    if path:
        make_private_directory(Path(path).parent)
    return AccessLogOutbox(file=Path(path) if path else None)


class AccessLogSink(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]  # xds-protos is untyped
    def __init__(self, outbox: AccessLogOutbox, sampling: LogSampling | None = None) -> None:
        self._outbox = outbox
        self._sampling = sampling

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[als_pb2.StreamAccessLogsMessage, als_pb2.StreamAccessLogsResponse],
    ) -> als_pb2.StreamAccessLogsResponse:
        node = gateway = ""
        async for message in request_iterator:
            if message.HasField("identifier"):
                node = message.identifier.node.id
                gateway = await node_gateway(node, context)
            if not gateway:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "the stream's first message names its node"
                )
            for entry in message.http_logs.log_entry:
                status = entry.response.response_code.value
                percent = None if self._sampling is None else self._sampling.received(node, status)
                self._outbox.add(gateway, entry, percent)
        return als_pb2.StreamAccessLogsResponse()


ACCESS_LOG_SERVICE = als_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name


def access_log_service(outbox: AccessLogOutbox, sampling: LogSampling | None = None) -> ExtraService:
    sink = AccessLogSink(outbox, sampling)
    return ExtraService(
        ACCESS_LOG_SERVICE, lambda server: als_pb2_grpc.add_AccessLogServiceServicer_to_server(sink, server)
    )

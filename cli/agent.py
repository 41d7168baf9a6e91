"""`gatehouse agent`: makes a replica behind NAT reachable through the gateway, over one outbound
stream to the server. It carries each connection the gateway makes to `--target`, and comes back
after the server restarts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator

import grpc

from cli.config import CliError, UsageError
from cli.output import console
from gatehouse.client.connection import Stubs
from gatehouse.v1 import tunnel_pb2

CHUNK = 64 << 10
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0)


def parse_target(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--target {target!r} is not host:port (for example 127.0.0.1:8000)")
    return host, int(port)


class _Connections:
    def __init__(self, target: tuple[str, int], outgoing: asyncio.Queue[tunnel_pb2.TunnelFrame]) -> None:
        self._target = target
        self._outgoing = outgoing
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._opening: dict[int, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self, connection: int) -> None:
        self._opening[connection] = asyncio.Event()
        task = asyncio.create_task(self._pump(connection))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pump(self, connection: int) -> None:
        try:
            reader, writer = await asyncio.open_connection(*self._target)
        except OSError:
            self._opening.pop(connection).set()
            await self._outgoing.put(
                tunnel_pb2.TunnelFrame(close=tunnel_pb2.TunnelClose(connection=connection))
            )
            return
        self._writers[connection] = writer
        self._opening.pop(connection).set()
        try:
            while chunk := await reader.read(CHUNK):
                await self._outgoing.put(
                    tunnel_pb2.TunnelFrame(data=tunnel_pb2.TunnelData(connection=connection, data=chunk))
                )
        except ConnectionError:
            pass
        finally:
            if self._writers.pop(connection, None) is not None:
                await self._outgoing.put(
                    tunnel_pb2.TunnelFrame(close=tunnel_pb2.TunnelClose(connection=connection))
                )
            writer.close()

    async def data(self, frame: tunnel_pb2.TunnelData) -> None:
        opening = self._opening.get(frame.connection)
        if opening is not None:
            await opening.wait()
        writer = self._writers.get(frame.connection)
        if writer is not None:
            writer.write(frame.data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    def close(self, connection: int) -> None:
        writer = self._writers.pop(connection, None)
        if writer is not None:
            writer.close()

    def close_all(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for task in self._tasks:
            task.cancel()


async def _session(stubs: Stubs, hello: tunnel_pb2.TunnelHello, target: tuple[str, int]) -> None:
    outgoing: asyncio.Queue[tunnel_pb2.TunnelFrame] = asyncio.Queue(maxsize=256)
    connections = _Connections(target, outgoing)

    async def frames() -> AsyncIterator[tunnel_pb2.TunnelFrame]:
        yield tunnel_pb2.TunnelFrame(hello=hello)
        while True:
            yield await outgoing.get()

    call = stubs.tunnels.Open(frames())
    try:
        async for frame in call:
            kind = frame.WhichOneof("frame")
            if kind == "ready":
                console.print(
                    f"Replica {hello.replica_id} of {hello.service} is reachable through the gateway "
                    f"(the gateway sees it at {frame.ready.address})"
                )
            elif kind == "connect":
                connections.open(frame.connect.connection)
            elif kind == "data":
                await connections.data(frame.data)
            elif kind == "close":
                connections.close(frame.close.connection)
    finally:
        connections.close_all()
        call.cancel()


async def run_agent(stubs: Stubs, project: str, service: str, target: str, replica_id: str | None) -> int:
    address = parse_target(target)
    replica = replica_id or f"{service}-agent-{socket.gethostname()}"
    hello = tunnel_pb2.TunnelHello(project=project, service=service, replica_id=replica)
    for attempt in itertools.count():
        try:
            await _session(stubs, hello, address)
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise CliError(error.details() or error.code().name.lower()) from None
        delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
        console.print(f"The connection to the server ended; trying again in {delay:.0f}s")
        await asyncio.sleep(delay)
    return 0

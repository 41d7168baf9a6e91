"""The server end of `gatehouse agent`.

An agent that runs an Envoy (its hello carries a certificate request) gets a certificate for its
service on its gateway and where that gateway takes tunnels (agent_certificates.py), again whenever
that changes; its replica is registered at a tunnel address (gatehouse/agent_tunnels.py), and the
stream carries no bytes: the agent's Envoy and the gateway's exchange them over reverse tunnels, so a
server restart is no outage.

Otherwise a replica behind NAT gets a local address the gateway routes to, and each connection to
that address travels over the agent's outbound stream.

While the stream lives, the replica is registered and heart-beats; when it ends, the replica leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gatehouse.agent_tunnels import tunnel_address
from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, tunnel_pb2, tunnel_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import InvalidArgument
from services.provisioner.agent_certificates import AgentTunnelIssuer

log = logging.getLogger(__name__)

CHUNK = 64 << 10
HEARTBEAT_SECONDS = 5.0
# How often a tunnelled agent's gateway is looked at again (the view of gateways is in memory).
GATEWAY_CHECK_SECONDS = 1.0
RUNNER = "agent"


class _Session:
    """One agent's stream: its listening socket, its connections, the frames going out."""

    def __init__(self) -> None:
        self.outgoing: asyncio.Queue[tunnel_pb2.TunnelFrame | None] = asyncio.Queue(maxsize=256)
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.pumps: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = next(self._ids)
        self.writers[connection] = writer
        await self.outgoing.put(
            tunnel_pb2.TunnelFrame(connect=tunnel_pb2.TunnelConnect(connection=connection))
        )
        try:
            while chunk := await reader.read(CHUNK):
                frame = tunnel_pb2.TunnelData(connection=connection, data=chunk)
                await self.outgoing.put(tunnel_pb2.TunnelFrame(data=frame))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if self.writers.pop(connection, None) is not None:
                await self.outgoing.put(
                    tunnel_pb2.TunnelFrame(close=tunnel_pb2.TunnelClose(connection=connection))
                )
            writer.close()

    async def deliver(self, frame: tunnel_pb2.TunnelFrame) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "data":
            writer = self.writers.get(frame.data.connection)
            if writer is not None:
                writer.write(frame.data.data)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
        elif kind == "close":
            writer = self.writers.pop(frame.close.connection, None)
            if writer is not None:
                writer.close()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


class TunnelsServicer(tunnel_pb2_grpc.TunnelsServicer):
    def __init__(self, stubs: Stubs, bind_host: str, tunnels: AgentTunnelIssuer | None = None) -> None:
        """With `tunnels`, agents that run an Envoy are served over reverse tunnels."""
        self._stubs = stubs
        self._bind = bind_host
        self._tunnels = tunnels
        self._cleanups: set[asyncio.Task[None]] = set()
        # The latest tunnelled session of each replica id: only it may unregister the replica (an
        # agent back at once registers the same address before its old stream's end is noticed).
        self._sessions: dict[str, object] = {}

    async def Open(
        self,
        request_iterator: AsyncIterator[tunnel_pb2.TunnelFrame],
        context: grpc.aio.ServicerContext[tunnel_pb2.TunnelFrame, tunnel_pb2.TunnelFrame],
    ) -> AsyncIterator[tunnel_pb2.TunnelFrame]:
        first = await anext(aiter(request_iterator))
        if first.WhichOneof("frame") != "hello":
            raise InvalidArgument("an agent starts with hello: project, service and replica id")
        hello = first.hello
        # The agent's replica is registered with this server's own token: the caller must be allowed
        # to register replicas of the project itself.
        current_principal().require_runner(hello.project)
        if hello.certificate_request and self._tunnels is not None:
            async for tunnelled in self._tunnelled(hello, request_iterator, context):
                yield tunnelled
            return
        session = _Session()
        server = await asyncio.start_server(session.accept, self._bind, 0)
        port = server.sockets[0].getsockname()[1]
        address = f"{self._bind}:{port}"
        register = registry_pb2.RegisterReplicaRequest(
            project=hello.project,
            service=hello.service,
            id=hello.replica_id,
            address=address,
            ready=True,
            runner=RUNNER,
        )
        tasks: list[asyncio.Task[None]] = []
        registered = False
        try:
            await self._register(register, context)
            registered = True
            log.info(
                "agent replica %s of %s/%s at %s", hello.replica_id, hello.project, hello.service, address
            )
            yield tunnel_pb2.TunnelFrame(ready=tunnel_pb2.TunnelReady(address=address))
            tasks = [
                asyncio.create_task(self._read(request_iterator, session)),
                asyncio.create_task(self._heartbeat(hello.replica_id)),
            ]
            while (frame := await session.outgoing.get()) is not None:
                yield frame
        finally:
            for task in tasks:
                task.cancel()
            server.close()
            session.close()
            if registered:
                # Its own task: this generator is being cancelled, and a cancelled await would skip it.
                cleanup = asyncio.create_task(self._unregister_if_ours(hello, address))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)

    async def _tunnelled(
        self,
        hello: tunnel_pb2.TunnelHello,
        request_iterator: AsyncIterator[tunnel_pb2.TunnelFrame],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[tunnel_pb2.TunnelFrame]:
        assert self._tunnels is not None
        try:
            service = await self._stubs.services.Get(
                registry_pb2.GetRequest(project=hello.project, name=hello.service)
            )
        except grpc.aio.AioRpcError as refused:
            await context.abort(refused.code(), refused.details() or "")
        tunnel = await self._tunnels.issue(service, hello)
        address = tunnel_address(tunnel.node, hello.target_port or 1)
        register = registry_pb2.RegisterReplicaRequest(
            project=hello.project,
            service=hello.service,
            id=hello.replica_id,
            address=address,
            ready=True,
            runner=RUNNER,
        )
        session = object()
        self._sessions[hello.replica_id] = session
        heartbeat: asyncio.Task[None] | None = None
        registered = False
        try:
            await self._register(register, context)
            registered = True
            log.info(
                "agent replica %s of %s/%s over tunnels to %s:%d",
                hello.replica_id, hello.project, hello.service, tunnel.host, tunnel.port,
            )  # fmt: skip
            yield tunnel_pb2.TunnelFrame(ready=tunnel_pb2.TunnelReady(address=address, tunnel=tunnel))
            heartbeat = asyncio.create_task(self._heartbeat(hello.replica_id))
            async for moved in self._follow_gateway(tunnel, request_iterator):
                yield tunnel_pb2.TunnelFrame(ready=tunnel_pb2.TunnelReady(address=address, tunnel=moved))
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if registered and self._sessions.get(hello.replica_id) is session:
                del self._sessions[hello.replica_id]
                cleanup = asyncio.create_task(self._unregister_if_ours(hello, address))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)

    async def _follow_gateway(
        self, tunnel: tunnel_pb2.AgentTunnel, request_iterator: AsyncIterator[tunnel_pb2.TunnelFrame]
    ) -> AsyncIterator[tunnel_pb2.AgentTunnel]:
        """Until the agent's stream ends (the agent sends nothing more; its stream's end is its
        replica's): the tunnel again whenever its gateway takes tunnels elsewhere (it gained or lost
        its HTTPS port, or moved), which the agent's Envoy then dials instead."""
        assert self._tunnels is not None
        ended = asyncio.ensure_future(_until_end(request_iterator))
        try:
            while not (await asyncio.wait({ended}, timeout=GATEWAY_CHECK_SECONDS))[0]:
                where = self._tunnels.endpoint(tunnel.gateway_id)
                if where is not None and where != (tunnel.host, tunnel.port):
                    tunnel.host, tunnel.port = where
                    log.info("agent tunnels of %s now go to %s:%d", tunnel.agent_name, *where)
                    yield tunnel
            ended.result()
        finally:
            ended.cancel()

    async def _register(
        self, request: registry_pb2.RegisterReplicaRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Registers the agent's replica; the registry's refusal (a service that runs `commands`, …)
        becomes the agent's one-line error."""
        try:
            await self._stubs.replicas.Register(request)
        except grpc.aio.AioRpcError as refused:
            await context.abort(refused.code(), refused.details() or "")

    async def _unregister_if_ours(self, hello: tunnel_pb2.TunnelHello, address: str) -> None:
        """A reconnected agent may already have registered the same id at a new address: leave it.
        A server that is stopping has closed its channel already: the agent registers again with the
        next server."""
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
            listed = await self._stubs.replicas.List(
                registry_pb2.ListReplicasRequest(project=hello.project, service=hello.service)
            )
            if any(r.id == hello.replica_id and r.address == address for r in listed.replicas):
                await self._stubs.replicas.Unregister(
                    registry_pb2.UnregisterReplicaRequest(id=hello.replica_id)
                )

    async def _read(self, request_iterator: AsyncIterator[tunnel_pb2.TunnelFrame], session: _Session) -> None:
        try:
            async for frame in request_iterator:
                await session.deliver(frame)
        finally:
            await session.outgoing.put(None)

    async def _heartbeat(self, replica_id: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stubs.replicas.Heartbeat(registry_pb2.HeartbeatRequest(id=replica_id, ready=True))


async def _until_end(request_iterator: AsyncIterator[tunnel_pb2.TunnelFrame]) -> None:
    async for _ in request_iterator:
        pass

"""The floor under benchmark 3 (fan-out): the same messages on the same number of streams, with bare
`grpc.aio` and no xDS logic at all, so gateway_xds's CPU per change can be read against what any
Python control plane on gRPC must spend.

Per change, as gateway_xds does for a new service and its replica, the server sends every stream a
cluster and a scope (two responses at once), answers the endpoints request the stream makes after
the cluster, then sends updated endpoints: four responses of the sizes bench.xds_fanout measured, and
five requests read and parsed (four ACKs and a subscription). The clients run in their own processes.

    .venv/bin/python -m bench.grpc_fanout_floor [--clients 100] [--changes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from bench.xds_harness import machine, percentile, process_cpu_seconds
from gateway_xds.testing.envoy import free_port

_METHOD = "/bench.Floor/Stream"
# Response sizes of one change in bench.xds_fanout (cluster, scope, endpoints twice): ~1.4 KB.
_SIZES = (560, 300, 200, 330)
_CLUSTER, _SCOPE, _EMPTY_ENDPOINTS, _ENDPOINTS = (
    discovery_pb2.DeltaDiscoveryResponse(
        type_url=f"t{i}", nonce=str(i), system_version_info="x" * size
    ).SerializeToString()
    for i, size in enumerate(_SIZES)
)


# -- the server (its own process, so that its CPU time is its own) ----------------------------------


class FloorServer:
    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.change = asyncio.Condition()
        self.generation = 0
        self.acks = 0
        self.done = asyncio.Event()

    async def stream(self, requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> object:
        seen = self.generation
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def read() -> None:
            async for raw in requests:  # type: ignore[attr-defined]
                request = discovery_pb2.DeltaDiscoveryRequest.FromString(raw)
                if request.resource_names_subscribe:
                    queue.put_nowait(_EMPTY_ENDPOINTS)
                elif request.response_nonce:
                    self.acks += 1
                    if request.response_nonce == "2":
                        queue.put_nowait(_ENDPOINTS)  # the replica's registration
                    if self.acks == 4 * self.streams:
                        self.done.set()
            queue.put_nowait(None)

        async def wake() -> None:
            nonlocal seen
            while True:
                async with self.change:
                    while self.generation <= seen:
                        await self.change.wait()
                    seen = self.generation
                queue.put_nowait(_CLUSTER)
                queue.put_nowait(_SCOPE)

        tasks = [asyncio.create_task(read()), asyncio.create_task(wake())]
        try:
            while (message := await queue.get()) is not None:
                yield message
        finally:
            for task in tasks:
                task.cancel()

    async def next_change(self) -> None:
        self.acks = 0
        self.done.clear()
        async with self.change:
            self.generation += 1
            self.change.notify_all()
        await self.done.wait()


async def serve(port: int, streams: int, changes: int) -> None:
    floor = FloorServer(streams)
    server = grpc.aio.server()
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.stream_stream_rpc_method_handler(floor.stream)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Floor", {"Stream": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the clients are connected
    times: list[float] = []
    for _ in range(changes):
        await asyncio.sleep(0.25)
        began = time.monotonic()
        await floor.next_change()
        times.append((time.monotonic() - began) * 1000)
    print(f"{percentile(times, 0.5):.1f} {percentile(times, 0.99):.1f}", flush=True)
    await server.stop(None)


# -- the clients -------------------------------------------------------------------------------------


async def client(channel: grpc.aio.Channel, ready: asyncio.Event) -> None:
    call: grpc.aio.StreamStreamCall[bytes, bytes] = channel.stream_stream(_METHOD)()
    await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url="t0").SerializeToString())
    ready.set()
    async for raw in call:
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url, response_nonce=response.nonce
            ).SerializeToString()
        )
        if response.nonce == "0":
            await call.write(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url="t2", resource_names_subscribe=["svc"]
                ).SerializeToString()
            )


async def clients(port: int, count: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        ready = [asyncio.Event() for _ in range(count)]
        tasks = [asyncio.create_task(client(channel, r)) for r in ready]
        await asyncio.gather(*(r.wait() for r in ready))
        print("connected", flush=True)
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass(frozen=True)
class Floor:
    all_acked_p50_ms: float
    all_acked_p99_ms: float
    cpu_per_change_ms: float


def measure(clients: int = 100, changes: int = 100, processes: int = 10) -> Floor:
    port = free_port()
    me = [sys.executable, "-m", "bench.grpc_fanout_floor"]
    server = subprocess.Popen(
        [*me, "--serve", str(port), str(clients), str(changes)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    base, extra = divmod(clients, processes)
    emulators = [
        subprocess.Popen(
            [*me, "--clients-of", str(port), str(base + (i < extra))],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # gRPC's notes as the streams are cut at the end
            text=True,
        )
        for i in range(processes)
    ]
    try:
        for emulator in emulators:
            assert emulator.stdout is not None and emulator.stdout.readline().strip() == "connected"
        cpu_before = process_cpu_seconds(server.pid)
        server.stdin.write("go\n")
        server.stdin.flush()
        p50, p99 = server.stdout.readline().split()
        cpu = process_cpu_seconds(server.pid) - cpu_before
    finally:
        for emulator in emulators:
            emulator.kill()
            emulator.wait()
        server.kill()
        server.wait()
    # The pauses between changes cost next to nothing: no stream has anything to do.
    return Floor(float(p50), float(p99), cpu / changes * 1000)


def report(floor: Floor, clients: int) -> None:
    print(f"  bare grpc.aio, {clients} streams, 4 responses and 5 requests each per change:")
    print(
        f"    all ACKs back:       p50 {floor.all_acked_p50_ms:7.1f} ms  p99 {floor.all_acked_p99_ms:7.1f} ms"
    )
    print(f"    server CPU per change, all streams: {floor.cpu_per_change_ms:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--processes", type=int, default=10)
    args = parser.parse_args()
    print(f"gRPC fan-out floor on {machine()}; os.cpu_count()={os.cpu_count()}")
    report(measure(args.clients, args.changes, args.processes), args.clients)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        asyncio.run(serve(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    elif len(sys.argv) == 4 and sys.argv[1] == "--clients-of":
        asyncio.run(clients(int(sys.argv[2]), int(sys.argv[3])))
    else:
        main()

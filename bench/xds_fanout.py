"""Benchmark 3, fan-out: one gateway with 10,000 services, served to one real Envoy and 100 emulated
Delta ADS clients (Python, in their own process, ACKing and subscribing like Envoy).

Each sample adds one service (apply + replica through the registry's API) and measures when every
emulated client has ACKed its cluster, endpoints and scope, and when the real Envoy answers 200 on
it; also the bytes each client received for the change, and gateway_xds's memory.

    .venv/bin/python -m bench.xds_fanout [--services 10000] [--clients 100] [--samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench import grpc_fanout_floor
from bench.xds_harness import (
    GATEWAY,
    HttpProbe,
    Stack,
    machine,
    percentile,
    process_cpu_seconds,
    process_memory,
    service_host,
    summary_ms,
)
from gateway_xds.provider.build import backend_name
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE
from gateway_xds.testing.ads_client import DeltaAdsClient
from gateway_xds.testing.upstream import Upstream

_TYPES = (CLUSTER, ENDPOINT, SCOPED_ROUTE)


# -- the emulated clients (their own process) ------------------------------------------------------


@dataclass
class Watch:
    name: str
    started_bytes: int
    acked: dict[str, float] = field(default_factory=dict)  # type URL -> when its ACK was sent


class EmulatedEnvoy:
    def __init__(self, channel: grpc.aio.Channel, node_id: str) -> None:
        self.client = DeltaAdsClient(channel, node_id, read_timeout=3600)
        self.bytes = 0
        self.synced = asyncio.Event()
        self.watch: Watch | None = None
        self.done: asyncio.Event = asyncio.Event()
        self._waiting_for = set(_TYPES) | {LISTENER}

    async def run(self) -> None:
        for type_url in (CLUSTER, LISTENER, SCOPED_ROUTE):
            await self.client.request(type_url)
        while True:
            response = await self.client.recv()
            self.bytes += response.ByteSize()
            await self.client.ack(response)
            acked_at = time.monotonic()
            if response.type_url == CLUSTER and response.resources:
                await self.client.request(ENDPOINT, [r.name for r in response.resources])
            self._waiting_for.discard(response.type_url)
            if not self._waiting_for and response.type_url == ENDPOINT:
                self.synced.set()
            watch = self.watch
            if watch is not None and any(r.name == watch.name for r in response.resources):
                watch.acked[response.type_url] = acked_at
                if set(_TYPES) <= watch.acked.keys():
                    self.done.set()


async def emulate(port: int, gateway_id: str, clients: int, first: int) -> None:
    loop = asyncio.get_running_loop()
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        envoys = [EmulatedEnvoy(channel, f"gateway/{gateway_id}/{first + i}") for i in range(clients)]
        tasks = [asyncio.create_task(e.run()) for e in envoys]
        waiting = [asyncio.create_task(e.synced.wait()) for e in envoys]
        started = loop.time()
        while waiting:
            _, pending = await asyncio.wait(waiting, timeout=5)
            waiting = list(pending)
            ended = [t.exception() for t in tasks if t.done() and not t.cancelled()]
            print(
                f"{clients - len(waiting)} of {clients} clients in step after {loop.time() - started:.0f}s"
                + (f"; a stream ended: {ended[0]!r}" if ended else ""),
                file=sys.stderr,
                flush=True,
            )
        print(json.dumps({"synced": True}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            name = line.strip()
            for envoy in envoys:
                envoy.done = asyncio.Event()
                envoy.watch = Watch(name, envoy.bytes)
            await asyncio.gather(*(e.done.wait() for e in envoys))
            times = [max(e.watch.acked.values()) for e in envoys if e.watch is not None]
            sizes = [e.bytes - e.watch.started_bytes for e in envoys if e.watch is not None]
            print(json.dumps({"name": name, "times": times, "bytes": sizes}), flush=True)
        for task in tasks:
            task.cancel()


# -- the driver --------------------------------------------------------------------------------------


class Clients:
    """The emulated clients, spread over a few processes (one Python process parsing 100 initial
    syncs would stall its event loop long enough to miss the server's keepalive pings)."""

    def __init__(self, port: int, gateway_id: str, clients: int, log: Path, processes: int = 10) -> None:
        self.log = log
        self.processes: list[subprocess.Popen[str]] = []
        first = 1
        for index in range(processes):
            count = clients // processes + (1 if index < clients % processes else 0)
            argv = [
                sys.executable, "-m", "bench.xds_fanout", "--emulate",
                str(port), gateway_id, str(count), str(first),
            ]  # fmt: skip
            first += count
            self.processes.append(
                subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("ab"), text=True
                )
            )

    def read(self, within: float) -> dict[str, list[float]]:
        """Every process's next line, merged."""
        lines: dict[int, str] = {}

        def read_one(index: int, process: subprocess.Popen[str]) -> None:
            assert process.stdout is not None
            lines[index] = process.stdout.readline()

        readers = [threading.Thread(target=read_one, args=(i, p)) for i, p in enumerate(self.processes)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + within
        for reader in readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        if len(lines) < len(self.processes) or not all(lines.values()):
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise TimeoutError("the emulated clients did not answer:\n" + "\n".join(tail))
        merged: dict[str, list[float]] = {"times": [], "bytes": []}
        for line in lines.values():
            answer = json.loads(line)
            for key in merged:
                merged[key] += [float(v) for v in answer.get(key, [])]
        return merged

    def watch(self, name: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(name + "\n")
            process.stdin.flush()

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(timeout=10)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--processes", type=int, default=10, help="processes the emulated clients share")
    parser.add_argument("--debug", action="store_true", help="gateway_xds logs at DEBUG level")
    args = parser.parse_args()
    print(f"xDS fan-out benchmark on {machine()}; os.cpu_count()={os.cpu_count()}")
    print(f"{args.services} services, {args.clients} emulated Delta clients + 1 real Envoy (concurrency 1)")
    workdir = tempfile.mkdtemp(prefix="gatehouse-xds-fanout-")
    with Upstream(b"ok") as upstream:
        debug = {"GATEHOUSE_LOG_LEVEL": "DEBUG"} if args.debug else {}
        stack = Stack(Path(workdir), args.services, upstream.port, xds_env=debug)
        await stack.start()
        clients = None
        try:
            assert stack.driver is not None and stack.xds is not None
            rss, _ = process_memory(stack.xds.pid)
            print(
                f"  gateway_xds memory, {args.services} services, the real Envoy's stream: {rss:.0f} MB RSS"
            )
            started = time.perf_counter()
            clients = Clients(
                stack.xds_port, stack.gateway_id, args.clients, Path(workdir) / "clients.log", args.processes
            )
            clients.read(within=1800)
            print(f"  {args.clients} clients in step after {time.perf_counter() - started:.1f}s", flush=True)
            rss, peak = process_memory(stack.xds.pid)
            print(f"  gateway_xds memory, {args.services} services, {args.clients + 1} streams: "
                  f"RSS {rss:.0f} MB (peak so far {peak:.0f} MB)", flush=True)  # fmt: skip
            all_acked: list[float] = []
            all_acked_after_writes: list[float] = []
            envoy_live: list[float] = []
            per_client_bytes: list[float] = []
            probe = HttpProbe(stack.http_port)
            idle_cpu = await cpu_rate_when_idle(stack.xds.pid)
            rss, peak = process_memory(stack.xds.pid)
            print(f"  the same 5 s later: RSS {rss:.0f} MB", flush=True)
            cpu_before, samples_began = process_cpu_seconds(stack.xds.pid), time.monotonic()
            for index in range(args.samples):
                name = f"fan-{index}"
                clients.watch(backend_name_for(name))
                await asyncio.sleep(0.05)
                began = time.monotonic()
                await stack.driver.service(name, GATEWAY, 8000)
                await stack.driver.replica(name, f"{name}-0", f"127.0.0.1:{upstream.port}")
                written = time.monotonic()
                probe.wait_for(service_host(name), 200)
                envoy_live.append((time.monotonic() - began) * 1000)
                result = clients.read(within=60)
                last = max(result["times"])
                all_acked.append((last - began) * 1000)
                all_acked_after_writes.append((last - written) * 1000)
                per_client_bytes += result["bytes"]
                await asyncio.sleep(0.2)
            probe.close()
            cpu_used = process_cpu_seconds(stack.xds.pid) - cpu_before
            samples_took = time.monotonic() - samples_began
            # Idle again after the changes: the lower rate is subtracted, so that work left over from
            # the first syncs (collections, trimming) does not hide any of the changes' cost.
            idle_cpu = min(idle_cpu, idle_after := await cpu_rate_when_idle(stack.xds.pid))
            cpu_used -= idle_cpu * samples_took
            cpu_per_change = cpu_used / args.samples * 1000
            rss, peak = process_memory(stack.xds.pid)
            print("\n  one new service; every number from the first registry write unless said otherwise")
            print(f"  all {args.clients} clients ACKed:                 {summary_ms(all_acked)}")
            print(f"  all clients ACKed, from the writes' end: {summary_ms(all_acked_after_writes)}")
            print(f"  the real Envoy answers 200:              {summary_ms(envoy_live)}")
            print(f"  gateway_xds CPU per change, all streams: {cpu_per_change:.1f} ms "
                  f"(beyond its {idle_cpu * 100:.1f}% when idle: keepalives, Envoy's stats; "
                  f"{idle_after * 100:.1f}% after the changes)")  # fmt: skip
            print(f"  bytes per client per change: p50 {percentile(per_client_bytes, 0.5):.0f}  "
                  f"max {max(per_client_bytes):.0f}")  # fmt: skip
            print(f"  gateway_xds memory after the changes: RSS {rss:.0f} MB (peak {peak:.0f} MB)")
        finally:
            if clients is not None:
                clients.stop()
            await stack.stop()
    shutil.rmtree(workdir)  # kept when something failed, for its logs
    print("\n  side by side, once the stack has stopped: the same messages with bare grpc.aio")
    floor = grpc_fanout_floor.measure(args.clients, args.samples, args.processes)
    grpc_fanout_floor.report(floor, args.clients)
    ours = percentile(all_acked_after_writes, 0.5)
    print(f"  gateway_xds / bare grpc.aio: CPU per change {cpu_per_change / floor.cpu_per_change_ms:.2f}x, "
          f"all ACKed p50 (from the writes' end) {ours / floor.all_acked_p50_ms:.2f}x")  # fmt: skip


async def cpu_rate_when_idle(pid: int, seconds: float = 5.0) -> float:
    """CPU seconds per second a process uses while no change is made."""
    before = process_cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (process_cpu_seconds(pid) - before) / seconds


def backend_name_for(name: str) -> str:
    from gatehouse.v1 import resources_pb2

    return backend_name(resources_pb2.Service(project="main", name=name))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--emulate":
        asyncio.run(emulate(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
    else:
        asyncio.run(main())

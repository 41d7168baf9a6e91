"""Registry latency through the real gRPC API, with the registry in its own process: Apply / Get /
List p50 and p99 at 50 concurrent clients (in processes of their own), and List of 10,000 services,
on SQLite and PostgreSQL.

    .venv/bin/python -m bench.registry_bench [--clients 50] [--services 10000] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import struct_pb2

from bench.xds_harness import process_cpu_seconds
from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from services.common.auth import Principal
from services.common.probes import free_port, tcp_open
from services.common.settings import Settings
from services.registry import services
from services.registry.app import Registry
from services.registry.configurations import ServiceConfig
from tests.support.databases import database_url

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(data)
    return result


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- clients, in processes of their own so that the client side is not the bottleneck ------------

CLIENT_PROCESSES = 5
APPLIES_PER_CLIENT = 10


async def _client_process(
    address: str, token: str, operation: str, first: int, clients: int, calls: int, names: int
) -> None:
    """One client process: `clients` concurrent clients, each making `calls` calls one after another;
    prints the latencies (ms) as JSON."""
    stubs = Stubs.connect(address, token)
    await stubs.services.List(registry_pb2.ListServicesRequest(project="main"))  # connected
    call = _OPERATIONS[operation](stubs, names)
    samples: list[float] = []

    async def client(index: int) -> None:
        for step in range(calls):
            started = time.perf_counter()
            await call(index * calls + step)
            samples.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(client(first + i) for i in range(clients)))
    await stubs.close()
    print(json.dumps(samples), flush=True)


def _apply(stubs: Stubs, names: int) -> Callable[[int], Awaitable[object]]:
    async def call(i: int) -> object:
        config = {"type": "service", "name": f"svc-{i}", "gateway": "bench-gw", "port": f"{10000 + i}:8000"}
        request = registry_pb2.ApplyRequest(project="main", configuration=_struct(config))
        return await stubs.configurations.Apply(request)

    return call


def _get(stubs: Stubs, names: int) -> Callable[[int], Awaitable[object]]:
    async def call(i: int) -> object:
        # The names the apply phase made: APPLIES_PER_CLIENT for each client.
        return await stubs.services.Get(registry_pb2.GetRequest(project="main", name=f"svc-{i % names}"))

    return call


def _list_gateways(stubs: Stubs, names: int) -> Callable[[int], Awaitable[object]]:
    async def call(i: int) -> object:
        return await stubs.gateways.List(registry_pb2.ListGatewaysRequest(project="main"))

    return call


_OPERATIONS = {"apply": _apply, "get": _get, "list-gateways": _list_gateways}


async def timed(address: str, token: str, operation: str, clients: int, calls: int) -> list[float]:
    """`clients` concurrent clients spread over CLIENT_PROCESSES processes, started together."""
    processes = min(CLIENT_PROCESSES, clients)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    firsts = [sum(shares[:i]) for i in range(processes)]
    names = clients * APPLIES_PER_CLIENT
    argv = [sys.executable, "-m", "bench.registry_bench", "--client", address, token, operation, str(names)]
    running = [
        await asyncio.create_subprocess_exec(
            *argv, str(first), str(share), str(calls), stdout=asyncio.subprocess.PIPE
        )
        for first, share in zip(firsts, shares, strict=True)
    ]
    samples: list[float] = []
    for process in running:
        output, _ = await process.communicate()
        assert process.returncode == 0, f"a client process of {operation} failed"
        samples += json.loads(output)
    return samples


class RegistryProcess:
    def __init__(self, home: Path, url: str) -> None:
        self.home, self.url, self.port = home, url, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> RegistryProcess:
        env = dict(
            os.environ,
            GATEHOUSE_HOME=str(self.home),
            GATEHOUSE_DB_URL=self.url,
            GATEHOUSE_LOG_LEVEL="WARNING",
            GATEHOUSE_METRICS_PORT="0",
        )
        self.process = subprocess.Popen([GATEHOUSE, "registry", "--port", str(self.port)], env=env)
        while not (self.home / "config.yml").exists() or not await tcp_open("127.0.0.1", self.port):
            await asyncio.sleep(0.05)
        self.token = yaml.safe_load((self.home / "config.yml").read_text())["token"]
        self.stubs = Stubs.connect(self.address, self.token)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stubs.close()
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=30)


async def seed_services(settings: Settings, count: int) -> None:
    """Bulk-creates services through the registry's own operations (the API path minus gRPC)."""
    registry = await Registry.start(settings)
    principal = Principal(user="bench", system=True)
    for start in range(0, count, 500):
        async with registry.ctx.write() as session:
            for index in range(start, min(count, start + 500)):
                config = ServiceConfig(name=f"bulk-{index}", gateway="bench-gw", port=f"{20000 + index}:8000")
                await services.apply(
                    session, principal, "main", config, "", 0, False, registry.ctx.reserved_ports
                )
    await registry.close()


def fmt(samples: list[float]) -> str:
    return f"{percentile(samples, 0.5):7.1f} {percentile(samples, 0.99):7.1f}"


async def run_one(kind: str, clients: int, total_services: int) -> dict[str, str]:
    home = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    results: dict[str, str] = {}
    async with database_url(kind, home) as url:
        settings = replace(Settings.from_env(), home=home, db_url=url)
        async with RegistryProcess(home, url) as registry:
            gateway = {"type": "gateway", "name": "bench-gw", "backend": "local", "region": "local"}
            await registry.stubs.configurations.Apply(
                registry_pb2.ApplyRequest(project="main", configuration=_struct(gateway))
            )
            for label, operation, calls in (
                ("Apply", "apply", APPLIES_PER_CLIENT),
                ("Get, first read of each", "get", 10),
                ("Get", "get", 40),
                ("List gateways", "list-gateways", 20),
            ):
                assert registry.process is not None
                cpu = process_cpu_seconds(registry.process.pid)
                samples = await timed(registry.address, registry.token, operation, clients, calls)
                cpu = process_cpu_seconds(registry.process.pid) - cpu
                results[f"{label} p50/p99 ms"] = fmt(samples)
                results[f"{label}: registry CPU ms per call"] = f"{cpu * 1000 / len(samples):7.2f}"
        await seed_services(settings, total_services - clients * APPLIES_PER_CLIENT)
        async with RegistryProcess(home, url) as registry:
            stubs = registry.stubs
            await stubs.projects.Create(registry_pb2.CreateProjectRequest(name="elsewhere"))
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                listed = await stubs.services.List(registry_pb2.ListServicesRequest(project="main"))
                timings.append((time.perf_counter() - started) * 1000)
            assert len(listed.services) == total_services
            results[f"List {total_services} services, first ms"] = f"{timings[0]:7.1f}"
            results[f"List {total_services} services, again ms"] = f"{statistics.median(timings[1:]):7.1f}"
            # A write in another project leaves this project's answers in place.
            other = {"type": "gateway", "name": "other-gw", "backend": "local", "region": "local"}
            await stubs.configurations.Apply(
                registry_pb2.ApplyRequest(project="elsewhere", configuration=_struct(other))
            )
            started = time.perf_counter()
            await stubs.services.List(registry_pb2.ListServicesRequest(project="main"))
            after_other = (time.perf_counter() - started) * 1000
            results[f"List {total_services} after a write elsewhere ms"] = f"{after_other:7.1f}"
    return results


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args()
    print(
        f"registry benchmark: {args.clients} concurrent clients in {CLIENT_PROCESSES} processes, "
        f"{os.cpu_count()} cores, the registry in its own process"
    )
    for kind in args.db.split(","):
        results = await run_one(kind, args.clients, args.services)
        print(f"\n[{kind}]")
        for name, value in results.items():
            print(f"  {name:38} {value}")


if __name__ == "__main__":
    if len(sys.argv) == 9 and sys.argv[1] == "--client":
        address, token, operation, names, first, clients, calls = sys.argv[2:]
        asyncio.run(
            _client_process(address, token, operation, int(first), int(clients), int(calls), int(names))
        )
    else:
        asyncio.run(main())

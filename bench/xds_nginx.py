"""Benchmark 2, nginx as the baseline: how nginx-based gateways apply a change (write a server block,
`nginx -s reload`) against gateway_xds (a registry write, pushed over xDS to Envoy), side by side.

For each, with N services present and a bounded load on one of them (keep-alive connections), 100
new services are added one after the other, each once the previous one is live and a quiet `--pause`
has passed (0.15 s by default, so that each is a lone change; with `--pause 0` they come back to back,
and gateway_xds batches them: at most 10 pushes a second per Envoy, two per new service); each one's
time to live is from the start of the change (the file write, or the registry write) to the first 200
on its host, and every failed or non-2xx answer of the load is counted. Both proxies run one worker
(nginx worker_processes 1, Envoy --concurrency 1) in front of the same nginx upstream; the load runs
in a process of its own, at a lower CPU priority than the systems under test.

    .venv/bin/python -m bench.xds_nginx [--services 1000] [--changes 100] [--connections 32] [--pause 0.15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.xds_harness import (
    DOMAIN,
    GATEWAY,
    HttpProbe,
    LoadProcess,
    Nginx,
    Stack,
    machine,
    service_host,
    static_upstream,
    summary_ms,
)
from gateway_xds.testing.envoy import free_port
from gateway_xds.testing.load import LoadResult

LOAD_HOST = service_host("seed-0")


def server_block(name: str, port: int) -> str:
    return (
        f"  server {{ listen 127.0.0.1:{port}; server_name {name}.{DOMAIN};\n"
        "    location / { proxy_pass http://app; proxy_http_version 1.1; "
        'proxy_set_header Connection ""; proxy_set_header Host $host; } }\n'
    )


@dataclass
class Run:
    live: list[float]  # ms from the start of each change to the first 200 on its host
    applied: list[float]  # ms of the change itself: `nginx -s reload`, or the two registry writes
    load: LoadResult
    load_seconds: float

    def load_line(self) -> str:
        rate = self.load.total / self.load_seconds
        return f"load: {self.load.summary()}, {rate:.0f} requests/s; failed {self.load.failures}"


def run_nginx(work: Path, services: int, changes: int, connections: int, upstream: int, pause: float) -> Run:
    port = free_port()
    http = f"  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}"
    nginx = Nginx(work / "nginx-gateway", http)
    (nginx.sites / "seeded.conf").write_text(
        "".join(server_block(f"seed-{i}", port) for i in range(services))
    )
    nginx.start()
    probe = HttpProbe(port)
    probe.wait_for(LOAD_HOST, 200, 60)
    live: list[float] = []
    reloads: list[float] = []
    load = LoadProcess(port, LOAD_HOST, connections)
    try:
        load.wait_started()
        for index in range(changes):
            name = f"new-{index}"
            started = time.perf_counter()
            (nginx.sites / f"{name}.conf").write_text(server_block(name, port))
            nginx.reload()
            reloads.append((time.perf_counter() - started) * 1000)
            probe.wait_for(service_host(name), 200, 120)
            live.append((time.perf_counter() - started) * 1000)
            time.sleep(pause)
    finally:
        result, seconds = load.stop()
        probe.close()
        nginx.stop()
    return Run(live, reloads, result, seconds)


async def run_gateway_xds(
    work: Path, services: int, changes: int, connections: int, upstream: int, pause: float
) -> Run:
    (work / "gateway-xds").mkdir()
    stack = Stack(work / "gateway-xds", services, upstream)
    await stack.start()
    probe = HttpProbe(stack.http_port)
    live: list[float] = []
    writes: list[float] = []
    load = LoadProcess(stack.http_port, LOAD_HOST, connections)
    try:
        assert stack.driver is not None
        await asyncio.to_thread(load.wait_started)
        for index in range(changes):
            name = f"new-{index}"
            started = time.perf_counter()
            await stack.driver.service(name, GATEWAY, 8000)
            await stack.driver.replica(name, f"{name}-0", f"127.0.0.1:{upstream}")
            writes.append((time.perf_counter() - started) * 1000)
            probe.wait_for(service_host(name), 200, 120)
            live.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(pause)
    finally:
        result, seconds = load.stop()
        probe.close()
        await stack.stop()
    return Run(live, writes, result, seconds)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pause", type=float, default=0.15, help="seconds between a change and the next")
    args = parser.parse_args()
    print(f"nginx reload vs gateway_xds on {machine()}; os.cpu_count()={os.cpu_count()}")
    print(
        f"{args.services} services present, {args.changes} services added one by one ({args.pause} s "
        f"apart), load on one host with {args.connections} keep-alive connections"
    )
    with tempfile.TemporaryDirectory(prefix="gatehouse-xds-nginx-") as workdir:
        work = Path(workdir)
        upstream_port = free_port()
        upstream = static_upstream(work / "upstream", upstream_port)
        upstream.start()
        try:
            print("\n[nginx: write a server block, nginx -s reload]", flush=True)
            nginx = await asyncio.to_thread(
                run_nginx, work, args.services, args.changes, args.connections, upstream_port, args.pause
            )
            print(f"  time to live:                {summary_ms(nginx.live)}")
            print(f"  of which the reload command: {summary_ms(nginx.applied)}")
            print(f"  {nginx.load_line()}", flush=True)
            print("\n[gateway_xds: registry write (service + replica), Delta xDS to Envoy]", flush=True)
            xds = await run_gateway_xds(
                work, args.services, args.changes, args.connections, upstream_port, args.pause
            )
            print(f"  time to live:                {summary_ms(xds.live)}")
            print(f"  of which the registry writes: {summary_ms(xds.applied)}")
            print(f"  {xds.load_line()}", flush=True)
        finally:
            upstream.stop()
    print(f"\nside by side ({os.cpu_count()} cores)")
    for label, run in (("nginx      ", nginx), ("gateway_xds", xds)):
        rate = run.load.total / run.load_seconds
        print(f"  {label} time to live {summary_ms(run.live)}; "
              f"failed requests {run.load.failures} of {run.load.total} ({rate:.0f}/s)")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())

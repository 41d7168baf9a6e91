"""Benchmark 2, nginx as the baseline: how nginx-based gateways apply a change (write a server block,
`nginx -s reload`) against gateway_xds (a registry write, pushed over xDS to Envoy), side by side.

For each, with N services present and a bounded load on one of them (keep-alive connections), 100
new services are added one after the other; each one's time to live is from the start of the change
(the file write, or the registry write) to the first 200 on its host, and every failed or non-2xx
answer of the load is counted. Both proxies run one worker (nginx worker_processes 1, Envoy
--concurrency 1) in front of the same nginx upstream.

    .venv/bin/python -m bench.xds_nginx [--services 1000] [--changes 100] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.xds_harness import (
    DOMAIN,
    GATEWAY,
    HttpProbe,
    Nginx,
    Stack,
    machine,
    service_host,
    static_upstream,
    summary_ms,
)
from gateway_xds.testing.envoy import free_port
from gateway_xds.testing.load import LoadLoop, LoadResult

LOAD_HOST = service_host("seed-0")


def server_block(name: str, port: int) -> str:
    return (
        f"  server {{ listen 127.0.0.1:{port}; server_name {name}.{DOMAIN};\n"
        "    location / { proxy_pass http://app; proxy_http_version 1.1; "
        'proxy_set_header Connection ""; proxy_set_header Host $host; } }\n'
    )


def run_nginx(
    work: Path, services: int, changes: int, connections: int, upstream: int
) -> tuple[list[float], LoadResult, list[float]]:
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
    load = LoadLoop(port, host=LOAD_HOST, connections=connections, max_seconds=3600).start()
    try:
        load.wait_for(200)
        for index in range(changes):
            name = f"new-{index}"
            started = time.perf_counter()
            (nginx.sites / f"{name}.conf").write_text(server_block(name, port))
            nginx.reload()
            reloads.append((time.perf_counter() - started) * 1000)
            probe.wait_for(service_host(name), 200, 120)
            live.append((time.perf_counter() - started) * 1000)
    finally:
        result = load.stop()
        probe.close()
        nginx.stop()
    return live, result, reloads


async def run_gateway_xds(
    work: Path, services: int, changes: int, connections: int, upstream: int
) -> tuple[list[float], LoadResult]:
    stack = Stack(work / "gateway-xds", services, upstream)
    (work / "gateway-xds").mkdir()
    await stack.start()
    probe = HttpProbe(stack.http_port)
    live: list[float] = []
    load = LoadLoop(stack.http_port, host=LOAD_HOST, connections=connections, max_seconds=3600).start()
    try:
        assert stack.driver is not None
        await asyncio.to_thread(load.wait_for, 200)
        for index in range(changes):
            name = f"new-{index}"
            started = time.perf_counter()
            await stack.driver.service(name, GATEWAY, 8000)
            await stack.driver.replica(name, f"{name}-0", f"127.0.0.1:{upstream}")
            probe.wait_for(service_host(name), 200, 120)
            live.append((time.perf_counter() - started) * 1000)
    finally:
        result = load.stop()
        probe.close()
        await stack.stop()
    return live, result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    print(f"nginx reload vs gateway_xds on {machine()}; os.cpu_count()={os.cpu_count()}")
    print(f"{args.services} services present, {args.changes} services added one by one, load on one host "
          f"with {args.connections} keep-alive connections")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gatehouse-xds-nginx-") as workdir:
        work = Path(workdir)
        upstream_port = free_port()
        upstream = static_upstream(work / "upstream", upstream_port)
        upstream.start()
        try:
            print("\n[nginx: write a server block, nginx -s reload]", flush=True)
            nginx_live, nginx_load, reloads = await asyncio.to_thread(
                run_nginx, work, args.services, args.changes, args.connections, upstream_port
            )
            print(f"  time to live:        {summary_ms(nginx_live)}")
            print(f"  of which the reload command: {summary_ms(reloads)}")
            print(f"  load: {nginx_load.summary()}; failed {nginx_load.failures}", flush=True)
            print("\n[gateway_xds: registry write (service + replica), Delta xDS to Envoy]", flush=True)
            xds_live, xds_load = await run_gateway_xds(
                work, args.services, args.changes, args.connections, upstream_port
            )
            print(f"  time to live:        {summary_ms(xds_live)}")
            print(f"  load: {xds_load.summary()}; failed {xds_load.failures}", flush=True)
        finally:
            upstream.stop()
    print("\nside by side")
    for label, live, load in (("nginx      ", nginx_live, nginx_load), ("gateway_xds", xds_live, xds_load)):
        print(f"  {label} time to live {summary_ms(live)}; failed requests {load.failures} of {load.total}")


if __name__ == "__main__":
    asyncio.run(main())

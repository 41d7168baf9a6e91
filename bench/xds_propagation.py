"""Benchmark 1, propagation: a registry write → the first 200 from a real Envoy on the new host.

Each sample applies a domain-mode service and registers its replica through the registry's API, then
polls Envoy until the new host answers 200; the service is deleted again (and gone) before the next
sample, which starts after a quiet 150 ms so that each is a lone change. Sizes are the number of
services already present.

    .venv/bin/python -m bench.xds_propagation [--sizes 1,1000,10000] [--samples 100] [--without-stats-sink]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.xds_harness import GATEWAY, HttpProbe, Stack, machine, service_host, summary_ms
from gateway_xds.testing.upstream import Upstream


async def measure(
    size: int, samples: int, workdir: Path, upstream: Upstream, stats_sink: bool = True
) -> tuple[list[float], list[float], list[float]]:
    stack = Stack(workdir, size, upstream.port, stats_sink=stats_sink)
    await stack.start()
    try:
        assert stack.driver is not None
        driver, probe = stack.driver, HttpProbe(stack.http_port)
        total: list[float] = []
        writes: list[float] = []
        after_writes: list[float] = []
        for index in range(samples):
            name = f"prop-{index}"
            host = service_host(name)
            assert probe.status(host) == 404, "the host exists before the write"
            started = time.perf_counter()
            await driver.service(name, GATEWAY, 8000)
            await driver.replica(name, f"{name}-0", f"127.0.0.1:{upstream.port}")
            written = time.perf_counter()
            probe.wait_for(host, 200)
            live = time.perf_counter()
            total.append((live - started) * 1000)
            writes.append((written - started) * 1000)
            after_writes.append((live - written) * 1000)
            await driver.delete_service(name, GATEWAY, 8000)
            probe.wait_for(host, 404)
            await asyncio.sleep(0.15)
        probe.close()
        return total, writes, after_writes
    finally:
        await stack.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,1000,10000")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument(
        "--without-stats-sink",
        action="store_true",
        help="Envoy without its OTLP stats sink (its flush every 2 s stalls Envoy's main thread)",
    )
    args = parser.parse_args()
    print(f"xDS propagation benchmark on {machine()}; os.cpu_count()={os.cpu_count()}")
    print(
        "registry write (apply + replica) -> first 200 from Envoy on the new host; Delta xDS, SQLite registry"
        + ("; Envoy without its stats sink" if args.without_stats_sink else "")
    )
    results = {}
    with Upstream(b"ok") as upstream:
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"\n[{size} services present]", flush=True)
            with tempfile.TemporaryDirectory(prefix="gatehouse-xds-bench-") as workdir:
                total, writes, after = await measure(
                    size, args.samples, Path(workdir), upstream, stats_sink=not args.without_stats_sink
                )
            results[size] = (total, writes)
            print(f"  write -> first 200:       {summary_ms(total)}")
            print(f"  the two registry writes:  {summary_ms(writes)}")
            print(f"  writes done -> first 200: {summary_ms(after)}", flush=True)
            slow = [
                (i, round(t), round(w)) for i, (t, w) in enumerate(zip(total, writes, strict=True)) if t > 150
            ]
            if slow:
                print(f"  samples over 150 ms (index, total, writes): {slow}", flush=True)
    print("\nsummary (write -> first 200)")
    for size, (total, _) in results.items():
        print(f"  {size:>6} services: {summary_ms(total)}")


if __name__ == "__main__":
    asyncio.run(main())

"""Benchmark 4, data plane: Envoy configured by gateway_xds vs the same Envoy with the same
configuration given statically, requests per second with wrk on one route.

Both Envoys get exactly the resources gateway_xds translates for a gateway of N domain-mode services
(scopes, clusters, endpoints) and the provisioner's bootstrap otherwise (its stats sink included):
one over Delta ADS from a running xDS server, the other as static resources in its bootstrap (scopes
inline, clusters STATIC with the same endpoints). The upstream is
an nginx answering 200 "ok". Each round runs both, in alternating order; the medians and the median
per-round ratio are printed.

    .venv/bin/python -m bench.xds_dataplane [--services 1000] [--rounds 10] [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench.xds_harness import HttpProbe, ensure_debian_package, machine, static_upstream
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Endpoint
from gateway_xds.publish import publish
from gateway_xds.server.reporter import NullReporter
from gateway_xds.server.server import build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.builders import DOMAIN, domain_gateway, service_name
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.static import static_bootstrap


def wrk(
    binary: str, port: int, host: str, seconds: int, connections: int, headers: tuple[str, ...] = ()
) -> float:
    """Requests/s of `wrk -t1`; `headers` ("Name: value") go with every request."""
    argv = [binary, "-t1", f"-c{connections}", f"-d{seconds}s", "-H", f"Host: {host}"]
    for header in headers:
        argv += ["-H", header]
    argv.append(f"http://127.0.0.1:{port}/")
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors or "Socket errors" in output:
        raise SystemExit(f"error: wrk saw failures:\n{output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert found is not None, output
    return float(found.group(1))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    wrk_binary = ensure_debian_package("wrk", "wrk")
    binary = envoy_binary()
    if binary is None:
        raise SystemExit("error: no envoy binary")
    print(f"xDS data-plane benchmark on {machine()}; os.cpu_count()={os.cpu_count()}")
    print(
        f"{args.services} services; wrk -t1 -c{args.connections} -d{args.seconds}s on one host; "
        "Envoy --concurrency 1; nginx upstream (1 worker)"
    )
    with tempfile.TemporaryDirectory(prefix="gatehouse-xds-dataplane-") as workdir:
        work = Path(workdir)
        upstream_port = free_port()
        upstream = static_upstream(work / "upstream", upstream_port)
        upstream.start()
        listen_port = free_port()
        ir = domain_gateway(
            args.services, endpoints=(Endpoint("127.0.0.1", upstream_port),), port=listen_port
        )
        host = f"{service_name(0)}.{DOMAIN}"
        cache = SnapshotCache()
        server = build_xds_server(cache, NodeIdAuthorizer(), NullReporter(), "127.0.0.1:0")
        await server.start()
        publish(cache, ir, 1)
        empty = work / "empty.yaml"
        empty.write_text("")
        rates: dict[str, list[float]] = {"dynamic": [], "static": []}
        try:
            for round_index in range(args.rounds):
                # Alternate the order so that a drift in the machine's load favours neither.
                order = ("dynamic", "static") if round_index % 2 == 0 else ("static", "dynamic")
                for kind in order:
                    params = BootstrapParams("gw-1", 0, "127.0.0.1", server.port, admin_port=free_port())
                    if kind == "dynamic":
                        bootstrap = render_bootstrap(params)
                    else:
                        bootstrap = static_bootstrap(ir, params, empty)
                    envoy = EnvoyProcess(binary, work / f"envoy-{kind}-{round_index}", bootstrap)
                    envoy.start()
                    try:
                        await asyncio.to_thread(envoy.wait_ready)
                        probe = HttpProbe(listen_port)
                        await asyncio.to_thread(probe.wait_for, host, 200, 60.0)
                        probe.close()
                        await asyncio.sleep(1.0)  # let the other Envoy's sockets go
                        rate = await asyncio.to_thread(
                            wrk, wrk_binary, listen_port, host, args.seconds, args.connections
                        )
                    finally:
                        envoy.stop()
                    rates[kind].append(rate)
                    print(f"  round {round_index + 1} {kind:7}: {rate:9.0f} requests/s", flush=True)
        finally:
            await server.stop(1.0)
            upstream.stop()
    dynamic, static = statistics.median(rates["dynamic"]), statistics.median(rates["static"])
    per_round = [d / s for d, s in zip(rates["dynamic"], rates["static"], strict=True)]
    print(
        f"\n  median requests/s: gateway_xds {dynamic:.0f}, static {static:.0f}; ratio {dynamic / static:.3f}"
        f"\n  per-round ratio: median {statistics.median(per_round):.3f}, "
        f"min {min(per_round):.3f}, max {max(per_round):.3f} ({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    asyncio.run(main())

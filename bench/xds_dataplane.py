"""Benchmark 4, data plane: Envoy configured by gateway_xds vs the same Envoy with the same
configuration given statically, requests per second with wrk on one route.

Both Envoys get exactly the resources gateway_xds translates for a gateway of N domain-mode services
(scopes, clusters, endpoints) and the provisioner's bootstrap otherwise (its stats sink included):
one over Delta ADS from a running xDS server, the other as static resources in its bootstrap (scopes
inline, clusters STATIC with the same endpoints). The upstream is
an nginx answering 200 "ok". Each round runs both, in alternating order; the medians and the median
per-round ratio are printed.

`--observability` compares instead the same Envoy configured by gateway_xds (its listener with the
control-plane cluster, as the product's are) with and without metrics and access logs: "observed" is
the provisioner's bootstrap (its OTLP stats sink pushing to gateway_xds's sink, the per-service
latency histogram and connection gauge, its runtime layer over RTDS) and the listener's gRPC access
log to gateway_xds (whose sink takes every entry it is sent and samples, and adapts the share of
successes the Envoy logs to the budget, as gateway_xds does); "bare" has neither the stats sink and
those stats, nor the runtime layer, nor the access log. `--warmup S` loads each Envoy for S seconds
before it is measured (both kinds), so that the share of successes logged has settled as it would
under sustained load.

    .venv/bin/python -m bench.xds_dataplane [--services 1000] [--rounds 10] [--seconds 10] [--connections 32]
        [--observability metrics|all] [--access-log-percent P] [--access-log-budget B] [--warmup S]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

from bench.xds_harness import HttpProbe, ensure_debian_package, machine, process_cpu_seconds, static_upstream
from gatehouse import access_logs
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gateway_xds.autoscale.metrics_sink import MetricsSink
from gateway_xds.autoscale.rates import RequestRates
from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Endpoint
from gateway_xds.observe.access_logs import AccessLogOutbox, access_log_service
from gateway_xds.observe.envoy_stats import EnvoyStats
from gateway_xds.observe.log_sampling import LogSampling
from gateway_xds.observe.runtime_service import runtime_service
from gateway_xds.provider.policies import AUTHORIZATION_CLUSTER
from gateway_xds.publish import publish
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE
from gateway_xds.server.server import ExtraService, build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.builders import DOMAIN, domain_gateway, service_name
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.reporters import NullReporter
from gateway_xds.testing.static import static_bootstrap

BARE_GATEWAY = "gw-bare"
OBSERVED_ONLY_STATS = ("upstream_rq_time", "upstream_cx_active")


def bare_bootstrap(params: BootstrapParams) -> dict[str, Any]:
    """The provisioner's bootstrap without the stats sink, the per-service stats only the metrics
    endpoint reads and the runtime layer that sets the share of access logs."""
    bootstrap = render_bootstrap(params)
    del bootstrap["stats_sinks"]
    del bootstrap["layered_runtime"]
    stats = bootstrap["stats_config"]
    del stats["histogram_bucket_settings"]
    patterns = stats["stats_matcher"]["inclusion_list"]["patterns"]
    stats["stats_matcher"]["inclusion_list"]["patterns"] = [
        p for p in patterns if not p["safe_regex"]["regex"].endswith(OBSERVED_ONLY_STATS)
    ]
    return bootstrap


def _metrics_sink() -> ExtraService:
    sink = MetricsSink(RequestRates(), stats=EnvoyStats())
    return ExtraService(
        metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
        lambda server: metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, server),
    )


def without_access_log(snapshot: Snapshot) -> Snapshot:
    """The same resources with no listener logging requests."""
    resources: dict[str, dict[str, Any]] = {
        type_url: dict(snapshot.resources_of(type_url))
        for type_url in (LISTENER, ROUTE, SCOPED_ROUTE, CLUSTER, ENDPOINT)
    }
    for name, listener in resources[LISTENER].items():
        bare = listener_pb2.Listener()
        bare.CopyFrom(listener)
        for chain in bare.filter_chains:
            for network_filter in chain.filters:
                manager = hcm.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                del manager.access_log[:]
                network_filter.typed_config.Pack(manager, deterministic=True)
        resources[LISTENER][name] = bare
    return Snapshot(revision=snapshot.revision, resources=resources)


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
    parser.add_argument(
        "--observability",
        choices=("metrics", "all"),
        help="observed vs bare, both over xDS: metrics alone, or metrics and access logs",
    )
    parser.add_argument(
        "--access-log-percent",
        type=int,
        default=100,
        help="with --observability all: the most of the successful requests logged",
    )
    parser.add_argument(
        "--access-log-budget",
        type=int,
        default=access_logs.DEFAULT_BUDGET,
        help="with --observability all: entries a second from the Envoy above which successes are sampled",
    )
    parser.add_argument("--warmup", type=int, default=0, help="seconds of load before each measurement")
    args = parser.parse_args()
    kinds = ("observed", "bare") if args.observability else ("dynamic", "static")
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
        if args.observability:
            listener = dataclasses.replace(
                ir.listeners[0],
                authorization_cluster=AUTHORIZATION_CLUSTER,
                access_log_percent=args.access_log_percent,
            )
            ir = dataclasses.replace(ir, listeners=(listener,))
        host = f"{service_name(0)}.{DOMAIN}"
        cache = SnapshotCache()
        sampling = LogSampling(args.access_log_budget, cap=args.access_log_percent)
        server = build_xds_server(
            cache,
            NodeIdAuthorizer(),
            NullReporter(),
            "127.0.0.1:0",
            services=(
                _metrics_sink(),
                access_log_service(AccessLogOutbox(), sampling),
                runtime_service(sampling),
            ),
        )
        await server.start()
        judging = asyncio.create_task(sampling.run())
        observed = publish(cache, ir, 1)
        cache.set_snapshot(BARE_GATEWAY, without_access_log(observed))
        if args.observability == "metrics":
            cache.set_snapshot("gw-1", without_access_log(observed))
        empty = work / "empty.yaml"
        empty.write_text("")
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        # Envoy's and this process's (the control plane's) CPU microseconds per request served.
        cpu: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
        try:
            for round_index in range(args.rounds):
                # Alternate the order so that a drift in the machine's load favours neither.
                order = kinds if round_index % 2 == 0 else kinds[::-1]
                for kind in order:
                    gateway = BARE_GATEWAY if kind == "bare" else "gw-1"
                    params = BootstrapParams(gateway, 0, "127.0.0.1", server.port, admin_port=free_port())
                    if kind in ("dynamic", "observed"):
                        bootstrap = render_bootstrap(params)
                    elif kind == "bare":
                        bootstrap = bare_bootstrap(params)
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
                        if args.warmup:
                            await asyncio.to_thread(
                                wrk, wrk_binary, listen_port, host, args.warmup, args.connections
                            )
                        assert envoy.process is not None
                        before = (process_cpu_seconds(envoy.process.pid), process_cpu_seconds(os.getpid()))
                        rate = await asyncio.to_thread(
                            wrk, wrk_binary, listen_port, host, args.seconds, args.connections
                        )
                        after = (process_cpu_seconds(envoy.process.pid), process_cpu_seconds(os.getpid()))
                        shares = sampling.shares()
                    finally:
                        envoy.stop()
                    rates[kind].append(rate)
                    served = rate * args.seconds
                    cost = [(b - a) / served * 1e6 for a, b in zip(before, after, strict=True)]
                    cpu[kind].append((cost[0], cost[1]))
                    logged = (
                        f", successes logged {shares['gateway/gw-1/0']:.3g}%"
                        if kind == "observed" and args.observability == "all" and "gateway/gw-1/0" in shares
                        else ""
                    )
                    print(
                        f"  round {round_index + 1} {kind:7}: {rate:9.0f} requests/s, CPU per request: "
                        f"Envoy {cost[0]:.1f} us, control plane {cost[1]:.1f} us{logged}",
                        flush=True,
                    )
        finally:
            judging.cancel()
            await server.stop(1.0)
            upstream.stop()
    first, second = kinds
    for kind in kinds:
        envoy_us = statistics.median(c[0] for c in cpu[kind])
        control_us = statistics.median(c[1] for c in cpu[kind])
        print(
            f"  {kind}: CPU per request, median: Envoy {envoy_us:.1f} us, control plane {control_us:.1f} us, "
            f"both {statistics.median(sum(c) for c in cpu[kind]):.1f} us"
        )
    cost_ratio = statistics.median(sum(c) for c in cpu[first]) / statistics.median(
        sum(c) for c in cpu[second]
    )
    print(f"  CPU per request, {first} / {second}: {cost_ratio:.3f}")
    dynamic, static = statistics.median(rates[first]), statistics.median(rates[second])
    per_round = [d / s for d, s in zip(rates[first], rates[second], strict=True)]
    print(
        f"\n  median requests/s: {first} {dynamic:.0f}, {second} {static:.0f}; ratio {dynamic / static:.3f}"
        f"\n  per-round ratio: median {statistics.median(per_round):.3f}, "
        f"min {min(per_round):.3f}, max {max(per_round):.3f} ({os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    asyncio.run(main())

"""Replicas behind NAT: the same nginx replica reached through the gateway directly, through
`gatehouse agent` (its Envoy's reverse tunnels, the default), and through the agent whose server stream
carries the bytes (`GATEHOUSE_AGENT_DATA_PATH=stream`, the path before tunnels). Requests per second
with wrk, in one run, rounds in rotating order; medians and the median per-round ratio to direct.

Beside requests per second, the CPU each process spent per request (µs): the gateway's Envoy, the
agent's side (its Envoy, or the agent process with the stream), the server (which the stream path
crosses) and nginx. On separate machines the gateway's share is what limits a gateway.

A real `gatehouse server` (its own home and ports, SQLite, a local gateway whose Envoy has one worker
as in issue 16's figures), three services with `auth: false` on three gateway ports, one nginx worker
on 127.0.0.1. The direct replica is registered with the server's system token (a user may not register
a loopback address). Everything runs on this machine: the agent's Envoy, which would run beside the
replica elsewhere, shares its cores with the gateway's Envoy, wrk and nginx.

With `--pin`, each round runs twice: as above, and pinned, the gateway's side (its Envoy, wrk, the
server) on the first core and the replica's side (nginx, the agent's Envoy, the agent process) on the
second, for every path alike (`taskset`), so that the ratio reflects what the gateway's core serves
rather than the agent's Envoy competing with it.

Agents of a gateway with HTTPS dial its HTTPS port instead of the tunnel port; the tunnel, once
accepted, is the same upstream connection either way, so the requests' path does not change.

    .venv/bin/python -m bench.agent_tunnel [--rounds 5] [--seconds 10] [--connections 32] [--agent-workers N]
        [--pin]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import suppress
from pathlib import Path

import yaml

from bench.xds_harness import Nginx, ensure_debian_package, machine, process_cpu_seconds
from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from gateway_xds.testing.envoy import free_port

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")
PATHS = ("direct", "agent (Envoy tunnels)", "agent (server stream)")
SERVICES = {
    "direct": "bench-direct",
    "agent (Envoy tunnels)": "bench-tunnel",
    "agent (server stream)": "bench-stream",
}
READY_WITHIN_SECONDS = 120.0
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Server:
    """`gatehouse server` in a home of its own, and the CLI beside it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            **os.environ,
            "GATEHOUSE_HOME": str(home),
            "GATEHOUSE_API_PORT": str(free_port()),
            "GATEHOUSE_XDS_PORT": str(free_port()),
            "GATEHOUSE_JOIN_PORT": "0",
            "GATEHOUSE_METRICS_PORT": "0",
            "GATEHOUSE_LOCAL_HTTP_PORT": str(free_port()),
            "GATEHOUSE_LOCAL_HTTPS_PORT": str(free_port()),
            "GATEHOUSE_AGENT_TUNNEL_PORT": str(free_port()),
            "GATEHOUSE_LOCAL_ENVOY_CONCURRENCY": "1",
            # The direct replica is registered once, without heartbeats.
            "GATEHOUSE_REPLICA_TTL": "86400",
        }
        for name in ("GATEHOUSE_SERVER", "GATEHOUSE_TOKEN", "GATEHOUSE_PROJECT"):
            self.env.pop(name, None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with (self.home / "server.log").open("ab") as log:
            self.process = subprocess.Popen([GATEHOUSE, "server"], env=self.env, stdout=log, stderr=log)
        state = self.home / "server" / "server.json"
        deadline = time.monotonic() + 60
        while not state.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "error: gatehouse server did not start: see " + str(self.home / "server.log")
                )
            time.sleep(0.1)

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.env['GATEHOUSE_API_PORT']}"

    def cli(self, *args: str) -> str:
        done = subprocess.run([GATEHOUSE, *args], env=self.env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"error: gatehouse {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def agent(self, service: str, target: str, stream: bool) -> subprocess.Popen[bytes]:
        env = {**self.env, "GATEHOUSE_AGENT_DATA_PATH": "stream"} if stream else self.env
        log = (self.home / f"agent-{service}.log").open("ab")
        argv = [GATEHOUSE, "agent", "--service", service, "--target", target, "--id", f"{service}-bench"]
        return subprocess.Popen(argv, env=env, stdout=log, stderr=log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


# Where each side runs when pinned: (gateway side, replica side).
GATEWAY_CORE, REPLICA_CORE = "0", "1"
UNPINNED, PINNED = "unpinned", "pinned"


def wrk(binary: str, url: str, seconds: int, connections: int, core: str | None = None) -> float:
    pinned = ["taskset", "-c", core] if core is not None else []
    argv = [*pinned, binary, "-t1", f"-c{connections}", f"-d{seconds}s", url]
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    if re.search(r"Non-2xx or 3xx responses: (\d+)", output) or "Socket errors" in output:
        raise SystemExit(f"error: wrk saw failures on {url}:\n{output}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert found is not None, output
    return float(found.group(1))


def status(url: str) -> int:
    try:
        with _no_proxy.open(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def wait_ok(url: str) -> None:
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    while status(url) != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {url} never answered 200")
        time.sleep(0.2)


def pin(pids: list[int], cores: str) -> None:
    """Every thread of each process onto `cores` (threads started later inherit it)."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-cp", cores, str(pid)], check=True, stdout=subprocess.DEVNULL)


def sides(server: Server, agents: list[subprocess.Popen[bytes]], nginx: Nginx) -> tuple[list[int], list[int]]:
    """(the gateway side's processes, the replica side's): the gateway's Envoy and the server; nginx,
    the agent's Envoy and the agent processes."""
    roles = involved(server, PATHS[1], agents, nginx)
    assert server.process is not None and nginx.process is not None
    gateway = [roles["gateway Envoy"], server.process.pid]
    replica = [nginx.process.pid, roles["nginx"], roles["agent side"], *(agent.pid for agent in agents)]
    return gateway, replica


async def register_direct(server: Server, address: str) -> None:
    token = (server.home / "server" / "system-token").read_text().strip()
    stubs = Stubs.connect(server.api, token)
    try:
        request = registry_pb2.RegisterReplicaRequest(
            project="main",
            service=SERVICES["direct"],
            id="nginx",
            address=address,
            ready=True,
            runner="bench",
        )
        await stubs.replicas.Register(request, timeout=30)
    finally:
        await stubs.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--agent-workers", type=int, default=0, help="the agent Envoy's workers (0: its default)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="each round also with the gateway's side and the replica's on a core each",
    )
    args = parser.parse_args()
    if args.pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("error: --pin needs two cores")
    if args.agent_workers:
        os.environ["GATEHOUSE_AGENT_ENVOY_CONCURRENCY"] = str(args.agent_workers)
    wrk_binary = ensure_debian_package("wrk", "wrk")
    workers = os.environ.get("GATEHOUSE_AGENT_ENVOY_CONCURRENCY") or "1"
    print(
        f"agent_tunnel: one nginx replica; wrk -t1 -c{args.connections} -d{args.seconds}s, "
        f"{args.rounds} rounds; gateway Envoy 1 worker, agent Envoy {workers} worker(s); {machine()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as scratch:
        root = Path(scratch)
        nginx_port = free_port()
        nginx = Nginx(
            root / "nginx",
            f"  server {{ listen 127.0.0.1:{nginx_port} backlog=4096; keepalive_requests 1000000;\n"
            '    location / { return 200 "hello from nginx\\n"; } }',
        )
        server = Server(root / "home")
        agents: list[subprocess.Popen[bytes]] = []
        nginx.start()
        server.start()
        try:
            urls = prepare(server, root, nginx_port, agents)
            modes = (UNPINNED, PINNED) if args.pin else (UNPINNED,)
            gateway_side, replica_side = sides(server, agents, nginx)
            every_core = f"0-{(os.cpu_count() or 1) - 1}"
            results: dict[str, dict[str, list[float]]] = {m: {p: [] for p in PATHS} for m in modes}
            costs: dict[str, dict[str, list[dict[str, float]]]] = {m: {p: [] for p in PATHS} for m in modes}
            for round_index in range(args.rounds):
                order = PATHS[round_index % 3 :] + PATHS[: round_index % 3]
                for mode in modes:
                    pin(gateway_side, GATEWAY_CORE if mode == PINNED else every_core)
                    pin(replica_side, REPLICA_CORE if mode == PINNED else every_core)
                    for path in order:
                        processes = involved(server, path, agents, nginx)
                        before = {name: process_cpu_seconds(pid) for name, pid in processes.items()}
                        core = GATEWAY_CORE if mode == PINNED else None
                        rate = wrk(wrk_binary, urls[path], args.seconds, args.connections, core)
                        after = {name: process_cpu_seconds(pid) for name, pid in processes.items()}
                        per_request = 1e6 / (rate * args.seconds)
                        costs[mode][path].append({n: (after[n] - before[n]) * per_request for n in processes})
                        results[mode][path].append(rate)
                    print(
                        f"round {round_index + 1} ({mode}): "
                        + ", ".join(f"{path} {results[mode][path][-1]:,.0f}" for path in PATHS),
                        flush=True,
                    )
            for mode in modes:
                where = ": the gateway's side on core 0, the replica's on core 1" if mode == PINNED else ""
                print(f"\n== {mode}{where}")
                report(results[mode], costs[mode])
        finally:
            for agent in agents:
                agent.send_signal(signal.SIGINT)
            for agent in agents:
                with suppress(subprocess.TimeoutExpired):
                    agent.wait(timeout=20)
            with suppress(SystemExit):
                server.cli("delete", "-f", str(root / "gw.dstack.yml"), "-y", "--force")
            server.stop()
            nginx.stop()


def prepare(
    server: Server, root: Path, nginx_port: int, agents: list[subprocess.Popen[bytes]]
) -> dict[str, str]:
    gateway = root / "gw.dstack.yml"
    gateway.write_text(
        yaml.safe_dump({"type": "gateway", "name": "bench-gw", "backend": "local", "region": "local"})
    )
    server.cli("apply", "-f", str(gateway), "-y")
    urls: dict[str, str] = {}
    for path, name in SERVICES.items():
        config = root / f"{name}.dstack.yml"
        spec = {
            "type": "service",
            "name": name,
            "gateway": "bench-gw",
            "port": f"{free_port()}:80",
            "auth": False,
        }
        config.write_text(yaml.safe_dump(spec))
        applied = server.cli("apply", "-f", str(config), "-y", "-d")
        found = re.search(r"available at (http://\S+)", applied)
        if found is None:
            raise SystemExit(f"error: no URL for {name}: {applied}")
        urls[path] = found.group(1) + "/"
    target = f"127.0.0.1:{nginx_port}"
    asyncio.run(register_direct(server, target))
    agents.append(server.agent(SERVICES["agent (Envoy tunnels)"], target, stream=False))
    agents.append(server.agent(SERVICES["agent (server stream)"], target, stream=True))
    for url in urls.values():
        wait_ok(url)
    return urls


def involved(
    server: Server, path: str, agents: list[subprocess.Popen[bytes]], nginx: Nginx
) -> dict[str, int]:
    """The processes a request of `path` crosses, by role: pids."""
    gateway = next((server.home / "gateways").glob("*/envoy.pid"))
    pids = {"gateway Envoy": int(gateway.read_text().split()[0])}
    if path == "agent (Envoy tunnels)":
        newest = max((server.home / "agents").glob("**/envoy-*/envoy.pid"), key=lambda f: f.stat().st_mtime)
        pids["agent side"] = int(newest.read_text())
    elif path == "agent (server stream)":
        pids["agent side"] = agents[1].pid
        assert server.process is not None
        pids["server"] = server.process.pid
    assert nginx.process is not None
    # The master only forks; its one worker answers.
    children = Path(f"/proc/{nginx.process.pid}/task/{nginx.process.pid}/children").read_text().split()
    pids["nginx"] = int(children[0]) if children else nginx.process.pid
    return pids


def report(results: dict[str, list[float]], costs: dict[str, list[dict[str, float]]]) -> None:
    direct = results["direct"]
    print(f"\n{'path':<24}{'median requests/s':>18}   ratio to direct: median per round (min-max)")
    for path in PATHS:
        ratios = [value / base for value, base in zip(results[path], direct, strict=True)]
        print(
            f"{path:<24}{statistics.median(results[path]):>18,.0f}   "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        )
    print("\nCPU per request, µs (median over rounds):")
    roles = ("gateway Envoy", "agent side", "server", "nginx")
    print(f"{'path':<24}" + "".join(f"{role:>15}" for role in roles))
    for path in PATHS:
        cells = []
        for role in roles:
            samples = [round_costs[role] for round_costs in costs[path] if role in round_costs]
            cells.append(f"{statistics.median(samples):>15.1f}" if samples else f"{'-':>15}")
        print(f"{path:<24}" + "".join(cells))
    tunnels, stream = statistics.median(results[PATHS[1]]), statistics.median(results[PATHS[2]])
    print(f"\nEnvoy tunnels / server stream: {tunnels / stream:.1f}x; cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()

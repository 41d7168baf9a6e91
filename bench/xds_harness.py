"""What the gateway_xds benchmarks share: a registry seeded with N domain-mode services, `gatehouse xds`
and a real Envoy as separate processes, an upstream, HTTP probes and percentiles.

Only loopback traffic; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from gatehouse.client.connection import Stubs
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.load import LoadLoop, LoadResult
from gateway_xds.testing.registry_driver import RegistryDriver
from services.common.auth import Principal
from services.common.probes import tcp_open
from services.common.settings import Settings
from services.registry import replicas, services
from services.registry.app import Registry
from services.registry.configurations import ServiceConfig

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")
GATEWAY = "bench"
DOMAIN = "bench.test"
_apt_updated = False


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model})"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 0.5):7.1f} ms  p99 {percentile(samples, 0.99):7.1f} ms  "
        f"max {max(samples):7.1f} ms  (n={len(samples)}, mean {statistics.fmean(samples):.1f})"
    )


def ensure_debian_package(package: str, binary: str) -> str:
    """The binary's path, installing the Debian package first when it is missing (needs root)."""
    global _apt_updated
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if found:
        return found
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
        _apt_updated = True
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if not found:
        raise SystemExit(f"error: installing {package} gave no {binary}")
    return found


def process_memory(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HttpProbe:
    """GETs on one keep-alive connection to 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._connection: http.client.HTTPConnection | None = None

    def status(self, host: str, path: str = "/") -> int:
        try:
            if self._connection is None:
                self._connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=5)
            self._connection.request("GET", path, headers={"Host": host})
            response = self._connection.getresponse()
            response.read()
            if response.will_close:
                self.close()
            return response.status
        except (OSError, http.client.HTTPException):
            self.close()
            return 0

    def wait_for(self, host: str, status: int, within: float = 30.0) -> float:
        """Seconds until `host` answers `status` (polling without pause); raises on timeout."""
        started = time.perf_counter()
        deadline = started + within
        while True:
            if self.status(host) == status:
                return time.perf_counter() - started
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{host} did not answer {status} within {within}s")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


LOAD_NICENESS = 10


class LoadProcess:
    """A LoadLoop in a process of its own, so that its threads never take the GIL from the
    benchmark's own timings. `python -m bench.xds_harness --load PORT HOST CONNECTIONS` runs until
    its stdin closes, then prints what it counted as JSON."""

    def __init__(self, port: int, host: str, connections: int) -> None:
        argv = [sys.executable, "-m", "bench.xds_harness", "--load", str(port), host, str(connections)]
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def wait_started(self) -> None:
        """Until the load has its first 200 answers (at most 30 s)."""
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if line != "started":
            self._process.kill()
            raise SystemExit(f"error: the load did not start ({line!r})")

    def stop(self) -> tuple[LoadResult, float]:
        """What the load counted, and for how many seconds it ran."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()
        output = self._process.stdout.read()
        self._process.wait(timeout=60)
        answer = json.loads(output.strip().splitlines()[-1])
        result = LoadResult()
        result.statuses.update({int(k): v for k, v in answer["statuses"].items()})
        result.errors.update(answer["errors"])
        return result, float(answer["seconds"])


def _run_load(port: int, host: str, connections: int) -> None:
    # The load is the harness, not the system under test: on a small machine it would otherwise take
    # the CPU that the registry and gateway_xds need to apply a change (a gateway host and its control
    # plane are different machines in production).
    os.nice(LOAD_NICENESS)
    started = time.perf_counter()
    load = LoadLoop(port, host=host, connections=connections, max_seconds=3600).start()
    load.wait_for(200)
    print("started", flush=True)
    sys.stdin.read()  # until the benchmark closes it
    result = load.stop()
    answer = {
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "errors": dict(result.errors),
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(answer), flush=True)


def service_host(name: str) -> str:
    return f"{name}.{DOMAIN}"


@dataclass
class Stack:
    """A registry with `services` ready domain-mode services on gateway `bench`, gateway_xds and one
    Envoy, each its own process."""

    workdir: Path
    services: int
    upstream_port: int
    envoy_concurrency: int = 1
    xds_env: dict[str, str] = field(default_factory=dict)
    # False: Envoy without its OTLP stats sink (to tell its periodic flush apart from the rest).
    stats_sink: bool = True
    http_port: int = field(default_factory=free_port)
    registry_port: int = field(default_factory=free_port)
    xds_port: int = field(default_factory=free_port)
    gateway_id: str = ""
    registry: subprocess.Popen[bytes] | None = None
    xds: subprocess.Popen[bytes] | None = None
    envoy: EnvoyProcess | None = None
    driver: RegistryDriver | None = None

    @property
    def home(self) -> Path:
        return self.workdir / "registry-home"

    @property
    def db_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.home / 'registry.sqlite'}"

    async def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        await self._start_registry()
        driver = await self._connect()
        gateway = await driver.running_gateway(GATEWAY, "127.0.0.1", self.http_port, domain=DOMAIN)
        self.gateway_id = gateway.id
        await self._close_driver()
        self._stop(self.registry)
        started = time.perf_counter()
        await self._seed()
        print(f"  seeded {self.services} services in {time.perf_counter() - started:.1f}s", flush=True)
        await self._start_registry()
        self.driver = await self._connect()
        self._start_xds()
        self._start_envoy()
        started = time.perf_counter()
        await self.wait_configured()
        print(
            f"  Envoy configured with {self.services} services in {time.perf_counter() - started:.1f}s",
            flush=True,
        )

    async def stop(self) -> None:
        await self._close_driver()
        if self.envoy is not None:
            self.envoy.stop()
        self._stop(self.xds)
        self._stop(self.registry)

    async def wait_configured(self, within: float = 600.0) -> None:
        """Until Envoy has every seeded service (its clusters) and the last one answers 200."""
        assert self.envoy is not None
        deadline = time.monotonic() + within
        probe = HttpProbe(self.http_port)
        while True:
            try:
                stats = await asyncio.to_thread(self.envoy.stats, "cluster_manager.active_clusters")
                clusters = stats.get("cluster_manager.active_clusters", 0)
            except OSError:
                clusters = 0
            last_ok = self.services == 0 or probe.status(service_host(f"seed-{self.services - 1}")) == 200
            if clusters >= self.services + 1 and last_ok:
                probe.close()
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy has {clusters} clusters of {self.services}")
            await asyncio.sleep(0.5)

    # -- parts -------------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return dict(
            os.environ,
            GATEHOUSE_HOME=str(self.home),
            GATEHOUSE_DB_URL=self.db_url,
            GATEHOUSE_LOG_LEVEL="WARNING",
            # The seeded replicas never heart-beat: keep the registry from sweeping them away.
            GATEHOUSE_REPLICA_TTL="86400",
        )

    async def _start_registry(self) -> None:
        log = (self.workdir / "registry.log").open("ab")
        self.registry = subprocess.Popen(
            [GATEHOUSE, "registry", "--port", str(self.registry_port)],
            env=self._env(),
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while not (self.home / "config.yml").exists() or not await tcp_open("127.0.0.1", self.registry_port):
            if self.registry.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    "error: the registry did not start; see " + str(self.workdir / "registry.log")
                )
            await asyncio.sleep(0.05)

    def _start_xds(self) -> None:
        token = (self.home / "server" / "system-token").read_text().strip()
        env = dict(
            self._env(),
            GATEHOUSE_HOME=str(self.workdir / "xds-home"),
            GATEHOUSE_SYSTEM_TOKEN=token,
            GATEHOUSE_XDS_PORT=str(self.xds_port),
            **self.xds_env,
        )
        log = (self.workdir / "xds.log").open("ab")
        address = f"127.0.0.1:{self.registry_port}"
        # gateway_xds alone (`gatehouse xds` would import every other service as well).
        argv = [sys.executable, "-m", "gateway_xds", "--registry", address]
        self.xds = subprocess.Popen(argv, env=env, stdout=log, stderr=log)

    def _start_envoy(self) -> None:
        binary = envoy_binary()
        if binary is None:
            raise SystemExit("error: no envoy binary (make install puts one in .venv/bin)")
        params = BootstrapParams(self.gateway_id, 0, "127.0.0.1", self.xds_port, admin_port=free_port())
        bootstrap = render_bootstrap(params)
        if not self.stats_sink:
            del bootstrap["stats_sinks"]
        workdir, concurrency = self.workdir / "envoy", self.envoy_concurrency
        self.envoy = EnvoyProcess(binary, workdir, bootstrap, concurrency=concurrency)
        self.envoy.start()

    async def _connect(self) -> RegistryDriver:
        address = f"127.0.0.1:{self.registry_port}"
        system = (self.home / "server" / "system-token").read_text().strip()
        # Replicas at 127.0.0.1 are registered as Gatehouse's own runners do: only its token may.
        return RegistryDriver(Stubs.connect(address, system), Stubs.connect(address, system))

    async def _close_driver(self) -> None:
        if self.driver is not None:
            await self.driver.admin.close()
            await self.driver.system.close()
            self.driver = None

    async def _seed(self) -> None:
        """Bulk-creates the services and their replicas through the registry's own operations."""
        settings = replace(Settings.from_env(), home=self.home, db_url=self.db_url)
        registry = await Registry.start(settings)
        principal = Principal(user="bench", system=True)
        for start in range(0, self.services, 500):
            async with registry.ctx.write() as session:
                for index in range(start, min(self.services, start + 500)):
                    name = f"seed-{index}"
                    config = ServiceConfig(name=name, gateway=GATEWAY, port=8000, https=False, auth=False)
                    await services.apply(
                        session, principal, "main", config, "", 0, False, registry.ctx.reserved_ports
                    )
                    row = await services.get(session, "main", name)
                    address = f"127.0.0.1:{self.upstream_port}"
                    await replicas.register(session, row, f"{name}-0", address, True, "bench")
        await registry.close()

    @staticmethod
    def _stop(process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class Nginx:
    """An nginx of our own (its prefix in `directory`), from Debian's package: `http` is the body of
    the http block."""

    def __init__(self, directory: Path, http: str, workers: int = 1) -> None:
        self.binary = ensure_debian_package("nginx", "nginx")
        self.directory = directory
        self.conf = directory / "nginx.conf"
        self.sites = directory / "sites"
        self.sites.mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "tmp"):
            (directory / sub).mkdir(exist_ok=True)
        self.conf.write_text(
            f"daemon off;\nworker_processes {workers};\npid {directory / 'nginx.pid'};\n"
            f"error_log {directory / 'logs' / 'error.log'} warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n  access_log off;\n"
            f"  client_body_temp_path {directory / 'tmp'};\n  proxy_temp_path {directory / 'tmp'};\n"
            f"  fastcgi_temp_path {directory / 'tmp'};\n  uwsgi_temp_path {directory / 'tmp'};\n"
            f"  scgi_temp_path {directory / 'tmp'};\n"
            f"{http}\n  include {self.sites}/*.conf;\n}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.directory / "logs" / "stderr.log").open("ab")
        argv = [self.binary, "-p", str(self.directory), "-c", str(self.conf)]
        self.process = subprocess.Popen(argv, stdout=log, stderr=log)

    def reload(self) -> None:
        argv = [self.binary, "-p", str(self.directory), "-c", str(self.conf), "-s", "reload"]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def static_upstream(directory: Path, port: int) -> Nginx:
    """nginx answering 200 "ok" on 127.0.0.1:port: an upstream that is never the bottleneck."""
    body = (
        f"  server {{ listen 127.0.0.1:{port} backlog=4096; keepalive_requests 1000000;\n"
        '    location / { return 200 "ok\\n"; } }'
    )
    return Nginx(directory, body)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--load":
        _run_load(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))

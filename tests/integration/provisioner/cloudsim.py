"""A cloud played on this machine, for the provisioner as a whole: every host it makes runs its very
startup data (`hostsim.run_startup_data`: unpacking, joining at the real join endpoint for its client
certificate), then starts Envoy as its systemd unit would, against a real gateway_xds over mTLS.

`SimulatedCloud` is a `HostDriver`: the cloud says a host runs as soon as it is made, as EC2 does
long before its startup script has done anything, so only its Envoy tells whether it serves. Hosts
can be broken the ways real ones break (the image pull refused); their console output is what the
script printed. `simulated_stack` runs the registry, gateway_xds, the join endpoint and the
provisioner in this process around such a cloud.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import itertools
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.app import XdsApp
from services.common.internal_ca import InternalCA, xds_server_credentials
from services.common.probes import free_port
from services.provisioner.backends.base import HostInfo
from services.provisioner.backends.cloud import CloudGatewayBackend, CloudHost
from services.provisioner.backends.factory import BackendFactory
from services.provisioner.backends.local.gateway import LocalGatewayBackend
from services.provisioner.credentials import AWSBackendConfig
from services.provisioner.hosts.identity import JoinEndpoint
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from services.provisioner.hosts.startup import UNIT_NAME, UNIT_PATH, envoy_args
from services.provisioner.join import JoinServer, JoinSetup
from services.provisioner.reconciler import Provisioner
from services.provisioner.runner import LocalRunner
from tests.integration.provisioner.hostsim import AdsEnvoy, HostEnvoy, in_root, relocate, run_startup_data
from tests.support.join_tokens import local_join_tokens
from tests.support.registry import live_registry
from tests.support.static_credentials import StaticCredentials

PULL_REFUSED = (
    "docker: Error response from daemon: toomanyrequests: You have reached your unauthenticated pull "
    "rate limit. https://www.docker.com/increase-rate-limit"
)
APT_LOCKED = "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (unattended-upgr)"


@dataclass
class SimulatedHost:
    index: int
    id: str
    fingerprint: str
    root: Path
    launched_at: float
    refuse_pull: bool
    apt_locked: bool = False
    console: str = ""
    envoy: HostEnvoy | AdsEnvoy | None = None
    boot: concurrent.futures.Future[None] | None = None
    # Seconds from being made to its Envoy running, and of it running its startup data.
    booted_in: float | None = None
    script_seconds: float | None = None
    gone: bool = False

    def envoy_log(self) -> str:
        log = self.root / "envoy.log"
        return log.read_text()[-3000:] if isinstance(self.envoy, HostEnvoy) and log.exists() else ""


@dataclass
class SimulatedCloud:
    """`real_envoy`: a real Envoy per host, its listeners on 127.0.0.1 and two free ports (so one
    host per gateway); else `AdsEnvoy`s, any number. The first `refuse_pulls` hosts made never get
    their image; the first `apt_locked` lack Docker and find the dpkg lock held, so their startup
    script fails."""

    directory: Path
    loop: asyncio.AbstractEventLoop
    real_envoy: bool = True
    refuse_pulls: int = 0
    apt_locked: int = 0
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    hosts_by_id: dict[str, SimulatedHost] = field(default_factory=dict)
    made: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- HostDriver --------------------------------------------------------------------------------

    def translate(self, error: Exception) -> Exception:
        return error

    def instance_type(self, plan: GatewayPlan) -> str:
        return plan.instance_type or "sim.small"

    def prepare(self, plan: GatewayPlan) -> None:
        pass

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        with self._lock:
            return [
                CloudHost(host.index, host.id, host.fingerprint, running=True, launched_at=host.launched_at)
                for host in self.hosts_by_id.values()
                if not host.gone
            ]

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        data = plan.startup_script(index)
        with self._lock:
            number = next(self._ids)
            host = SimulatedHost(
                index,
                f"sim-{number}",
                fingerprint,
                self.directory / f"sim-{number}",
                time.time(),
                refuse_pull=number <= self.refuse_pulls,
                apt_locked=number <= self.apt_locked,
            )
            self.hosts_by_id[host.id] = host
            self.made.append(host.id)
        host.boot = asyncio.run_coroutine_threadsafe(self._boot(host, data), self.loop)

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(self.hosts_by_id[host.id]), self.loop).result(30)
        self.deleted.append(host.id)

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        return HostInfo(
            hostname="127.0.0.1",
            listen_address="127.0.0.1",
            http_port=self.http_port,
            https_port=self.https_port,
        )

    def delete_all(self, plan: GatewayPlan) -> list[str]:
        for host in list(self.hosts_by_id.values()):
            if not host.gone:
                self.delete_host(plan, CloudHost(host.index, host.id, host.fingerprint, running=True))
        return []

    def console_output(self, plan: GatewayPlan, host: CloudHost) -> str | None:
        return self.hosts_by_id[host.id].console or None

    # -- the hosts ---------------------------------------------------------------------------------

    async def _boot(self, host: SimulatedHost, data: str) -> None:
        started = time.monotonic()
        if host.apt_locked:
            run = await run_startup_data(data, host.root, failing={"apt-get": APT_LOCKED}, absent=["docker"])
        else:
            run = await run_startup_data(data, host.root)
        host.script_seconds = time.monotonic() - started
        host.console = run.console
        if run.code != 0 or ["systemctl", "enable", "--now", UNIT_NAME] not in [c[:4] for c in run.calls]:
            host.console += f"\nthe startup script exited {run.code}"
            return
        # systemd starts the unit: `docker run ... IMAGE -c /etc/gatehouse/envoy.json ...`.
        unit = in_root(host.root / "host", UNIT_PATH).read_text()
        exec_start = shlex.split(
            next(line for line in unit.splitlines() if line.startswith("ExecStart="))[10:]
        )
        if host.refuse_pull:
            host.console += f"\n{PULL_REFUSED}\ngatehouse-envoy.service: Main process exited, status=125"
            return
        assert exec_start[-len(envoy_args()) :] == envoy_args()
        root = host.root / "host"
        relocate(root)
        if host.gone:
            return
        if self.real_envoy:
            host.envoy = HostEnvoy(root, envoy_args(), host.root / "envoy.log")
        else:
            host.envoy = AdsEnvoy(root)
            host.envoy.start()
        host.booted_in = time.time() - host.launched_at

    async def _stop(self, host: SimulatedHost) -> None:
        host.gone = True
        if host.boot is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(host.boot)
        if isinstance(host.envoy, HostEnvoy):
            host.envoy.stop()
        elif isinstance(host.envoy, AdsEnvoy):
            await host.envoy.stop()


@dataclass
class SimulatedStack:
    registry: Stubs  # the admin's
    system: Stubs
    cloud: SimulatedCloud
    provisioner: Provisioner
    xds: XdsApp

    async def apply_gateway(self, name: str, **spec: Any) -> resources_pb2.Gateway:
        config = struct_pb2.Struct()
        config.update({"type": "gateway", "name": name, "backend": "aws", "region": "eu-west-1", **spec})
        applied = await self.registry.configurations.Apply(
            registry_pb2.ApplyRequest(project="main", configuration=config)
        )
        return applied.gateway

    async def gateway(self, name: str) -> resources_pb2.Gateway:
        return await self.registry.gateways.Get(registry_pb2.GetRequest(project="main", name=name))


@contextlib.asynccontextmanager
async def simulated_stack(
    directory: Path,
    host_deadline: float,
    replace_backoff: float = 0.5,
    real_envoy: bool = True,
    refuse_pulls: int = 0,
    apt_locked: int = 0,
) -> AsyncIterator[SimulatedStack]:
    """The registry, gateway_xds (mTLS), the join endpoint and the provisioner, in this process, with
    project main's `aws` backend being a `SimulatedCloud`."""
    async with live_registry(directory / "home") as registry:
        ca = InternalCA.create()
        xds = XdsApp.build(
            registry.system, "127.0.0.1:0", credentials=xds_server_credentials(ca, ["127.0.0.1"])
        )
        xds_task = asyncio.create_task(xds.run())
        tokens = local_join_tokens()
        join_server = JoinServer(ca, tokens, ["127.0.0.1"])
        await join_server.start("127.0.0.1", 0)
        join = JoinSetup(
            tokens, JoinEndpoint(f"https://127.0.0.1:{join_server.port}", ca.certificate_pem.decode())
        )
        loop = asyncio.get_running_loop()
        # Short: each host's Envoy admin socket is under it, and a socket path has 107 bytes.
        hosts_directory = Path(tempfile.mkdtemp(prefix="gh-sim-"))
        cloud = SimulatedCloud(
            hosts_directory, loop, real_envoy=real_envoy, refuse_pulls=refuse_pulls, apt_locked=apt_locked
        )
        backend = CloudGatewayBackend("aws", cloud, XdsEndpoint("127.0.0.1", xds.port), join=join)
        local = LocalGatewayBackend(directory / "gateways", "127.0.0.1", xds.port, "127.0.0.1", 1, 1)
        factory = BackendFactory(
            {"local": local},
            StaticCredentials({("main", "aws"): AWSBackendConfig(type="aws")}),
            {"aws": lambda config: backend},
        )
        provisioner = Provisioner(
            registry.system,
            factory,
            local,
            LocalRunner(directory / "replicas"),
            host_deadline=host_deadline,
            replace_backoff=replace_backoff,
        )
        provisioner_task = asyncio.create_task(provisioner.run())
        try:
            yield SimulatedStack(registry.admin, registry.system, cloud, provisioner, xds)
        finally:
            for host in list(cloud.hosts_by_id.values()):
                await cloud._stop(host)
            for task in (provisioner_task, xds_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await join_server.stop()
            shutil.rmtree(hosts_directory, ignore_errors=True)


class Ec2Hosts:
    """EC2 instances an emulator (moto) lists, played as hosts: each instance of a gateway that runs
    runs its user data (`hostsim.run_startup_data`, joining at the server's join endpoint) and then an
    `AdsEnvoy` (a real Envoy would bind :80 and :443 on every address of this shared machine); an
    instance that goes takes its Envoy with it. In a thread of its own, beside a test that blocks."""

    def __init__(self, ec2: Any, directory: Path, poll_seconds: float = 0.2) -> None:
        self._ec2 = ec2
        self._directory = directory
        self._poll = poll_seconds
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ec2-hosts", daemon=True)
        self._task: concurrent.futures.Future[None] | None = None
        self.consoles: dict[str, str] = {}

    def __enter__(self) -> Ec2Hosts:
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._follow(), self._loop)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(concurrent.futures.CancelledError, Exception):
                self._task.result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    async def _follow(self) -> None:
        hosts: dict[str, asyncio.Task[None]] = {}
        envoys: dict[str, AdsEnvoy] = {}
        try:
            while True:
                live = await asyncio.to_thread(self._running)
                for instance_id in live - hosts.keys():
                    hosts[instance_id] = asyncio.create_task(self._boot(instance_id, envoys))
                for instance_id in hosts.keys() - live:
                    hosts.pop(instance_id).cancel()
                    envoy = envoys.pop(instance_id, None)
                    if envoy is not None:
                        await envoy.stop()
                await asyncio.sleep(self._poll)
        finally:
            for task in hosts.values():
                task.cancel()
            for envoy in envoys.values():
                await envoy.stop()

    def _running(self) -> set[str]:
        pages = self._ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["gatehouse-gateway"]}])
        return {
            instance["InstanceId"]
            for reservation in pages["Reservations"]
            for instance in reservation["Instances"]
            if instance["State"]["Name"] in ("pending", "running")
        }

    async def _boot(self, instance_id: str, envoys: dict[str, AdsEnvoy]) -> None:
        attribute = await asyncio.to_thread(
            self._ec2.describe_instance_attribute, InstanceId=instance_id, Attribute="userData"
        )
        data = base64.b64decode(attribute["UserData"]["Value"]).decode()
        scratch = self._directory / instance_id
        run = await run_startup_data(data, scratch)
        self.consoles[instance_id] = run.console
        if run.code == 0:
            relocate(scratch / "host")
            envoys[instance_id] = envoy = AdsEnvoy(scratch / "host")
            envoy.start()

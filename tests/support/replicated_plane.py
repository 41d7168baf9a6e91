"""The control plane as two copies of each process on one PostgreSQL database, as real `gatehouse`
processes: for the tests and benchmarks of a replicated control plane."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from cryptography.fernet import Fernet

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from services.common.probes import free_port
from tests.support.databases import database_url
from tests.support.server import GATEHOUSE

COPIES = ("a", "b")
ROLES = ("registry", "xds", "provisioner", "certificates")
START_SECONDS = 60.0


@dataclass
class Process:
    role: str
    copy: str
    home: Path
    args: list[str]
    env: dict[str, str]
    port: int
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.home / f"{self.role}.log").open("ab") as log:
            self.popen = subprocess.Popen(
                [GATEHOUSE, self.role, *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return (self.home / f"{self.role}.log").read_text(errors="replace")


@dataclass
class Plane:
    processes: dict[tuple[str, str], Process]
    local_state: Path
    db_url: str
    admin_tokens: dict[str, str] = field(default_factory=dict)
    system_token: str = ""
    encryption_key: str = ""

    def of(self, role: str, copy: str) -> Process:
        return self.processes[(role, copy)]

    def registry_address(self, copy: str) -> str:
        return f"127.0.0.1:{self.of('registry', copy).port}"

    def logs(self) -> str:
        return "\n".join(f"--- {p.role} {p.copy}\n{p.log()[-3000:]}" for p in self.processes.values())


async def _wait_serving(stubs: Stubs, process: Process) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        assert process.popen is not None and process.popen.poll() is None, process.log()
        try:
            await stubs.identity.WhoAmI(registry_pb2.WhoAmIRequest(), timeout=2)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def replicated_plane(
    root: Path, roles: Sequence[str] = ROLES, prefer_own_registry: bool = False
) -> AsyncIterator[Plane]:
    """Two copies of each of `roles` (the registries first, both at once), each with its own empty
    home, sharing only the database and what a mounted secret would give them; ended by pid.

    Every process reaches the registry copies as one address list (it moves to the other when the
    one it uses goes); with `prefer_own_registry`, copy b's processes list registry b first."""
    local_state = root / "local-state"
    async with database_url("postgresql", root) as url:
        ports = {(role, copy): free_port() for role in roles for copy in COPIES}
        registries = ",".join(f"127.0.0.1:{ports[('registry', copy)]}" for copy in COPIES)
        shared = dict(
            os.environ,
            GATEHOUSE_DB_URL=url,
            GATEHOUSE_SYSTEM_TOKEN=f"gh_{secrets.token_urlsafe(24)}",
            GATEHOUSE_ENCRYPTION_KEY=Fernet.generate_key().decode(),
            GATEHOUSE_REGISTRY=f"ipv4:{registries}",
            GATEHOUSE_LOCAL_STATE=str(local_state),
            GATEHOUSE_LOCAL_XDS_ADDRESS=",".join(
                f"127.0.0.1:{port}" for (role, _copy), port in ports.items() if role == "xds"
            ),
            GATEHOUSE_LOCAL_HTTP_PORT=str(free_port()),
            GATEHOUSE_LOCAL_HTTPS_PORT=str(free_port()),
            GATEHOUSE_LOCAL_ENVOY_CONCURRENCY="1",
            GATEHOUSE_LOG_LEVEL="INFO",
            GATEHOUSE_METRICS_PORT="0",
        )
        processes: dict[tuple[str, str], Process] = {}
        for (role, copy), port in ports.items():
            home = root / f"{role}-{copy}"
            home.mkdir()
            env = dict(shared, GATEHOUSE_HOME=str(home), GATEHOUSE_JOIN_PORT=str(free_port()))
            if prefer_own_registry:
                order = [copy, *(other for other in COPIES if other != copy)]
                env["GATEHOUSE_REGISTRY"] = "ipv4:" + ",".join(
                    f"127.0.0.1:{ports[('registry', item)]}" for item in order
                )
            if role == "xds":
                env["GATEHOUSE_XDS_PORT"] = str(port)
                args: list[str] = []
            else:
                # The provisioner's local Envoys stream from both gateway_xds copies.
                env["GATEHOUSE_XDS_PORT"] = str(ports.get(("xds", copy), 0))
                args = ["--port", str(port)]
            processes[(role, copy)] = Process(role, copy, home, args, env, port)
        result = Plane(
            processes,
            local_state,
            url,
            system_token=shared["GATEHOUSE_SYSTEM_TOKEN"],
            encryption_key=shared["GATEHOUSE_ENCRYPTION_KEY"],
        )
        try:
            # Both registries at once: migrations and bootstrap take turns.
            for copy in COPIES:
                result.of("registry", copy).start()
            for copy in COPIES:
                system = Stubs.connect(result.registry_address(copy), result.system_token)
                await _wait_serving(system, result.of("registry", copy))
                await system.close()
                config = yaml.safe_load((result.of("registry", copy).home / "config.yml").read_text())
                result.admin_tokens[copy] = config["token"]
            for (role, _copy), process in processes.items():
                if role != "registry":
                    process.start()
            yield result
        finally:
            for process in processes.values():
                process.stop()
            for pid_file in local_state.glob("**/*.pid"):
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)

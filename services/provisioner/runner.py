"""The local runner: runs a service's `commands` as replica processes on this machine."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gatehouse.v1 import resources_pb2
from services.common.listening import group_holds, listeners
from services.common.probes import free_port, tcp_open
from services.provisioner.backends.local.network import (
    HostNetwork,
    NetworkError,
    ReplicaEndpoint,
    ReplicaNetwork,
)
from services.provisioner.backends.local.processes import ManagedProcess

READY_TIMEOUT_SECONDS = 120.0
# Replicas write files as any program would (the server's own umask keeps its files private).
REPLICA_UMASK = 0o022
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")


class ReplicaFailed(Exception):
    pass


class ReplicaGone(Exception):
    """The replica's service went away (deleted, or changed) while the replica was starting."""


@dataclass(frozen=True)
class LocalReplica:
    service_id: str
    index: int
    process: ManagedProcess

    @property
    def id(self) -> str:
        return f"{self.service_id}-{self.index}"

    @property
    def spec_file(self) -> Path:
        return self.process.directory / "spec-hash"

    @property
    def workdir(self) -> Path:
        return self.process.directory / "work"


def spec_hash(service: resources_pb2.Service) -> str:
    """Changes when what a replica runs changes (the service as resolved: secrets included)."""
    spec = {
        "commands": list(service.spec.commands),
        "env": dict(sorted(service.spec.env.items())),
        "port": service.spec.app_port,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class LocalRunner:
    def __init__(
        self,
        root: Path,
        network: ReplicaNetwork | None = None,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> None:
        self._root = root
        self.network: ReplicaNetwork = network or HostNetwork()
        self._ready_timeout = ready_timeout
        self._replicas: dict[tuple[str, int], LocalReplica] = {}
        self._stopping = 0
        self._none_stopping = asyncio.Event()
        self._none_stopping.set()

    def replica(self, service_id: str, index: int) -> LocalReplica:
        key = (service_id, index)
        if key not in self._replicas:
            process = ManagedProcess(self._root / service_id / str(index), "replica")
            self._replicas[key] = LocalReplica(service_id, index, process)
        return self._replicas[key]

    def indices(self, service_id: str) -> list[int]:
        directory = self._root / service_id
        if not directory.exists():
            return []
        return sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit())

    def service_ids(self) -> set[str]:
        if not self._root.exists():
            return set()
        return {path.name for path in self._root.iterdir() if path.is_dir()}

    def port(self, replica: LocalReplica, app_port: int) -> int:
        """Where the replica listens, which its commands find in $PORT: the service's port in a
        network of its own; on the shared network, replica 0 there and each further one on its own
        (kept across restarts)."""
        if self.network.isolated or replica.index == 0:
            return app_port
        path = replica.process.directory / "port"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            replica.process.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            chosen = free_port()
            path.write_text(f"{chosen}\n")
            return chosen

    async def address(self, replica: LocalReplica, app_port: int) -> str:
        """host:port where the gateway reaches the replica."""
        endpoint = await self._endpoint(replica)
        return f"{endpoint.address}:{self.port(replica, app_port)}"

    async def _endpoint(self, replica: LocalReplica) -> ReplicaEndpoint:
        try:
            return await self.network.attach(replica.process.directory)
        except NetworkError as error:
            raise ReplicaFailed(f"replica {replica.index}: no network: {error}") from None

    def version(self, replica: LocalReplica) -> str | None:
        """The spec hash the replica was started with; None if it never was."""
        try:
            return replica.spec_file.read_text().strip()
        except OSError:
            return None

    @property
    def ready_timeout(self) -> float:
        return self._ready_timeout

    def is_current(self, replica: LocalReplica, service: resources_pb2.Service) -> bool:
        return replica.process.running() and self.version(replica) == spec_hash(service)

    async def start(self, replica: LocalReplica, service: resources_pb2.Service) -> None:
        """Starts `service` (its env and commands already resolved) as `replica`, once the replicas
        being stopped are gone: on a shared network they may hold the port the new one listens on
        (a deleted service's, right before another service on the same port is applied)."""
        await self._none_stopping.wait()
        endpoint = await self._endpoint(replica)
        port = self.port(replica, service.spec.app_port)
        if not self.network.isolated and listeners(port):
            raise ReplicaFailed(
                f"port {port} is taken on this machine by another process (local replicas share "
                "this machine's network here: stop that process, or use another port)"
            )
        replica.workdir.mkdir(parents=True, exist_ok=True)
        # Only what a shell needs from the server's environment: never its tokens or cloud keys.
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        env.update(service.spec.env)
        env["PORT"] = str(port)
        env["GATEHOUSE_SERVICE"] = service.name
        env["GATEHOUSE_REPLICA"] = str(replica.index)
        # `python` in a command means the Python that runs Gatehouse, even where only python3 exists.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        script = "set -e\n" + "\n".join(service.spec.commands) + "\n"
        argv = [*endpoint.command_prefix, "/bin/sh", "-c", script]
        replica.process.start(argv, env=env, cwd=replica.workdir, umask=REPLICA_UMASK)
        replica.spec_file.write_text(spec_hash(service) + "\n")

    async def wait_ready(
        self, replica: LocalReplica, app_port: int, wanted: Callable[[], bool] = lambda: True
    ) -> None:
        """Returns once the replica itself answers on its port: in its own network, where nothing
        else can listen on its address, or, on the shared network, through a socket its own
        processes hold. Raises ReplicaGone as soon as `wanted()` turns false."""
        endpoint = await self._endpoint(replica)
        port = self.port(replica, app_port)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ready_timeout
        while loop.time() < deadline:
            if not wanted():
                raise ReplicaGone(replica.id)
            if not replica.process.running():
                raise ReplicaFailed(self.exit_reason(replica))
            if await self._answers(replica, endpoint, port):
                return
            await asyncio.sleep(0.1)
        raise ReplicaFailed(self._silence_reason(replica, endpoint, port))

    async def _answers(self, replica: LocalReplica, endpoint: ReplicaEndpoint, port: int) -> bool:
        if self.network.isolated:
            return await tcp_open(endpoint.address, port, timeout=0.5)
        group = replica.process.pid()
        held = {listener.inode for listener in listeners(port)}
        return group is not None and await asyncio.to_thread(group_holds, group, held)

    def _silence_reason(self, replica: LocalReplica, endpoint: ReplicaEndpoint, port: int) -> str:
        reason = f"replica {replica.index} did not open port {port} in {self._ready_timeout:.0f}s"
        pid = replica.process.pid()
        if self.network.isolated and pid is not None:
            inside = listeners(port, Path("/proc", str(pid), "net"))
            if inside and all(listener.address.is_loopback for listener in inside):
                reason += (
                    f": it listens on {inside[0].address} only, which the gateway cannot reach; "
                    "listen on 0.0.0.0"
                )
        return reason

    def exit_reason(self, replica: LocalReplica) -> str:
        code = replica.process.exit_code()
        if code is None:
            how = "exited"
        elif code < 0:
            how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        lines = [line for line in replica.process.tail(3) if line.strip()]
        return f"replica {replica.index} {how}" + (": " + " | ".join(lines) if lines else "")

    async def stop(self, replica: LocalReplica) -> None:
        self._stopping += 1
        self._none_stopping.clear()
        try:
            await replica.process.stop()
        finally:
            self._stopping -= 1
            if self._stopping == 0:
                self._none_stopping.set()
        await self.network.detach(replica.process.directory)
        shutil.rmtree(replica.process.directory, ignore_errors=True)
        self._replicas.pop((replica.service_id, replica.index), None)

    async def stop_service(self, service_id: str) -> None:
        for index in self.indices(service_id):
            await self.stop(self.replica(service_id, index))
        shutil.rmtree(self._root / service_id, ignore_errors=True)

    def logs(self, service_id: str, tail: int) -> dict[str, list[str]]:
        return {
            self.replica(service_id, index).id: self.replica(service_id, index).process.tail(tail)
            for index in self.indices(service_id)
        }

"""The local runner: runs a service's `commands` as replica processes on this machine."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from gatehouse.v1 import resources_pb2
from services.common.probes import free_port, tcp_open
from services.provisioner.backends.local.processes import ManagedProcess

READY_TIMEOUT_SECONDS = 120.0
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")


class ReplicaFailed(Exception):
    pass


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

    def port(self, app_port: int) -> int:
        """Replica 0 listens on the service's port; each further one on its own (kept across restarts),
        which its commands find in $PORT."""
        if self.index == 0:
            return app_port
        path = self.process.directory / "port"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            self.process.directory.mkdir(parents=True, exist_ok=True)
            chosen = free_port()
            path.write_text(f"{chosen}\n")
            return chosen


def spec_hash(service: resources_pb2.Service) -> str:
    """Changes when what a replica runs changes (the service as resolved: secrets included)."""
    spec = {
        "commands": list(service.spec.commands),
        "env": dict(sorted(service.spec.env.items())),
        "port": service.spec.app_port,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class LocalRunner:
    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self._root = root
        self.host = host
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

    def is_current(self, replica: LocalReplica, service: resources_pb2.Service) -> bool:
        try:
            recorded = replica.spec_file.read_text().strip()
        except OSError:
            return False
        return replica.process.running() and recorded == spec_hash(service)

    async def start(self, replica: LocalReplica, service: resources_pb2.Service) -> None:
        """Starts `service` (its env and commands already resolved) as `replica`, once the replicas
        being stopped are gone: on this one machine they may hold the port the new one listens on
        (a deleted service's, right before another service on the same port is applied)."""
        await self._none_stopping.wait()
        replica.workdir.mkdir(parents=True, exist_ok=True)
        # Only what a shell needs from the server's environment: never its tokens or cloud keys.
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        env.update(service.spec.env)
        env["PORT"] = str(replica.port(service.spec.app_port))
        env["GATEHOUSE_SERVICE"] = service.name
        env["GATEHOUSE_REPLICA"] = str(replica.index)
        # `python` in a command means the Python that runs Gatehouse, even where only python3 exists.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        script = "set -e\n" + "\n".join(service.spec.commands) + "\n"
        replica.process.start(["/bin/sh", "-c", script], env=env, cwd=replica.workdir)
        replica.spec_file.write_text(spec_hash(service) + "\n")

    async def wait_ready(self, replica: LocalReplica, port: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        while loop.time() < deadline:
            if not replica.process.running():
                raise ReplicaFailed(self.exit_reason(replica))
            if await tcp_open(self.host, port, timeout=0.5):
                return
            await asyncio.sleep(0.1)
        raise ReplicaFailed(
            f"replica {replica.index} did not open port {port} in {READY_TIMEOUT_SECONDS:.0f}s"
        )

    def exit_reason(self, replica: LocalReplica) -> str:
        lines = [line for line in replica.process.tail(3) if line.strip()]
        return f"replica {replica.index} exited" + (": " + " | ".join(lines) if lines else "")

    async def stop(self, replica: LocalReplica) -> None:
        self._stopping += 1
        self._none_stopping.clear()
        try:
            await replica.process.stop()
        finally:
            self._stopping -= 1
            if self._stopping == 0:
                self._none_stopping.set()
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

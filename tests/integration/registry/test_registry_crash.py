"""A registry on SQLite killed with SIGKILL in the middle of concurrent writes: after a restart every
write it acknowledged is there, and nothing is half-written (each write's rows, its feed events and
the revision counter agree)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from services.common.probes import free_port, tcp_open
from tests.support.server import GATEHOUSE

WRITERS = 8
ACKNOWLEDGED_BEFORE_KILL = 120


@dataclass
class RegistryProcess:
    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def database(self) -> Path:
        return self.home / "registry.sqlite"

    async def start(self) -> None:
        env = dict(
            os.environ,
            GATEHOUSE_HOME=str(self.home),
            GATEHOUSE_DB_URL=f"sqlite+aiosqlite:///{self.database}",
            GATEHOUSE_METRICS_PORT="0",
            GATEHOUSE_LOG_LEVEL="WARNING",
        )
        argv = [GATEHOUSE, "registry", "--port", str(self.port)]
        with (self.home / "registry.log").open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        for _ in range(600):
            if (self.home / "config.yml").exists() and await tcp_open("127.0.0.1", self.port):
                return
            assert self.process.poll() is None, (self.home / "registry.log").read_text()
            await asyncio.sleep(0.05)
        raise AssertionError("the registry did not start")

    def kill(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    @contextlib.asynccontextmanager
    async def system(self) -> AsyncIterator[Stubs]:
        """Gatehouse's own token: only it registers replicas at loopback addresses."""
        token = (self.home / "server" / "system-token").read_text().strip()
        stubs = Stubs.connect(f"127.0.0.1:{self.port}", token)
        try:
            yield stubs
        finally:
            await stubs.close()


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(data)
    return result


async def _write_until_killed(
    stubs: Stubs, writer: int, acknowledged: list[str], enough: asyncio.Event
) -> None:
    """Applies services with a replica each, noting each write the registry acknowledged, until the
    registry is gone."""
    step = 0
    while True:
        name = f"w{writer}-{step}"
        service = {"type": "service", "name": name, "gateway": "crash-gw", "https": False, "auth": False}
        service["port"] = f"{20000 + writer * 1000 + step}:8000"
        try:
            await stubs.configurations.Apply(
                registry_pb2.ApplyRequest(project="main", configuration=_struct(service)), timeout=10
            )
            acknowledged.append(f"service {name}")
            register = registry_pb2.RegisterReplicaRequest(
                project="main", service=name, id=f"{name}-r", address="127.0.0.1:9", ready=True, runner="test"
            )
            await stubs.replicas.Register(register, timeout=10)
            acknowledged.append(f"replica {name}-r")
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                return
            raise
        if len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL:
            enough.set()
        step += 1


async def test_a_registry_killed_mid_write_keeps_every_acknowledged_write_whole(tmp_path: Path) -> None:
    registry = RegistryProcess(tmp_path)
    await registry.start()
    try:
        async with registry.system() as stubs:
            gateway = {"type": "gateway", "name": "crash-gw", "backend": "local", "region": "local"}
            await stubs.configurations.Apply(
                registry_pb2.ApplyRequest(project="main", configuration=_struct(gateway))
            )
            acknowledged: list[str] = []
            enough = asyncio.Event()
            writers = [
                asyncio.create_task(_write_until_killed(stubs, index, acknowledged, enough))
                for index in range(WRITERS)
            ]
            await asyncio.wait_for(enough.wait(), timeout=120)
            registry.kill(signal.SIGKILL)
            await asyncio.gather(*writers)
        # At the instant of the kill some writes were in flight: none of them may be half there.
        with sqlite3.connect(registry.database) as db:
            counter = db.execute("SELECT value FROM revision_counter").fetchone()[0]
            revisions = [row[0] for row in db.execute("SELECT revision FROM events ORDER BY revision")]
            service_versions = dict(db.execute("SELECT name, resource_version FROM services"))
            replica_versions = dict(db.execute("SELECT id, resource_version FROM replicas"))
        assert revisions and counter == revisions[-1], "the revision counter and the feed disagree"
        for name, version in {**service_versions, **replica_versions}.items():
            assert version in revisions, f"{name} was written without its feed event"
        for write in acknowledged:
            kind, name = write.split(" ")
            stored = service_versions if kind == "service" else replica_versions
            assert name in stored, f"acknowledged {write} was lost"

        await registry.start()
        async with registry.system() as stubs:
            listed = await stubs.services.List(registry_pb2.ListServicesRequest(project="main"))
            names = {service.name for service in listed.services}
            assert names == set(service_versions)
            for service in listed.services:
                has_replica = f"{service.name}-r" in replica_versions
                running = service.status.state == resources_pb2.SERVICE_STATE_RUNNING
                assert running == has_replica, f"{service.name}: its replica and its state disagree"
            # The registry takes writes again, after the last revision it had.
            applied = await stubs.configurations.Apply(
                registry_pb2.ApplyRequest(
                    project="main",
                    configuration=_struct(
                        {"type": "service", "name": "after", "gateway": "crash-gw", "port": "30000:8000"}
                    ),
                )
            )
            assert applied.service.resource_version == counter + 1
    finally:
        if registry.process is not None and registry.process.poll() is None:
            registry.kill(signal.SIGTERM)

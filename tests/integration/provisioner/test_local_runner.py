"""The local runner's replicas are real processes on this machine, so they share its ports."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gatehouse.v1 import resources_pb2
from services.common.probes import free_port
from services.provisioner.runner import LocalRunner

# Holds its port for a while after SIGTERM, as a server finishing its requests would.
SLOW_TO_STOP = """python -c '
import signal, socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.7), sys.exit(0)))
while True:
    time.sleep(1)
' $PORT"""


def service(service_id: str, port: int, command: str) -> resources_pb2.Service:
    return resources_pb2.Service(
        id=service_id, name=service_id, spec=resources_pb2.ServiceSpec(commands=[command], app_port=port)
    )


async def test_a_replica_starts_once_a_stopping_one_has_let_go_of_its_port(tmp_path: Path) -> None:
    runner = LocalRunner(tmp_path)
    port = free_port()
    first = runner.replica("first", 0)
    await runner.start(first, service("first", port, SLOW_TO_STOP))
    await runner.wait_ready(first, port)
    stopping = asyncio.create_task(runner.stop_service("first"))
    await asyncio.sleep(0.1)  # SIGTERM sent; the port is still held
    second = runner.replica("second", 0)
    await runner.start(second, service("second", port, f"python -m http.server {port}"))
    try:
        await stopping
        await runner.wait_ready(second, port)  # else ReplicaFailed: "Address already in use"
        assert second.process.running()
    finally:
        await runner.stop_service("second")

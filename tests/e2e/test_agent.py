"""Replicas behind NAT: a replica listening only on 127.0.0.2 (the gateway cannot connect to it)
becomes reachable through the gateway once `gatehouse agent` opens its outbound stream."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.http import fetch, wait_for_status
from tests.support.server import GATEHOUSE, ServerProcess

pytestmark = pytest.mark.real
HIDDEN = "127.0.0.2"


@pytest.fixture
def hidden_replica(tmp_path: Path) -> Iterator[int]:
    port = free_port(HIDDEN)
    (tmp_path / "hello.txt").write_text("hello from behind NAT")
    replica = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", HIDDEN],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while fetch(f"http://{HIDDEN}:{port}/hello.txt")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    replica.terminate()
    replica.wait(timeout=10)


def test_the_agent_carries_gateway_traffic_to_a_hidden_replica(
    server: ServerProcess, tmp_path: Path, hidden_replica: int
) -> None:
    gateway = tmp_path / "gw.dstack.yml"
    gateway.write_text("type: gateway\nname: nat-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(gateway), "-y").code == 0
    gateway_port = free_port()
    service = tmp_path / "nat.dstack.yml"
    service.write_text(
        f"type: service\nname: nat\ngateway: nat-gw\nport: '{gateway_port}:{hidden_replica}'\n"
    )
    assert server.cli("apply", "-f", str(service), "-y").code == 0
    # The gateway's side cannot reach the replica directly.
    assert fetch(f"http://127.0.0.1:{hidden_replica}/hello.txt")[0] == 0
    agent = subprocess.Popen(
        [
            GATEHOUSE,
            "agent",
            "--service",
            "nat",
            "--target",
            f"{HIDDEN}:{hidden_replica}",
            "--id",
            "nat-laptop",
        ],
        env=server.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        status, body = wait_for_status(f"http://127.0.0.1:{gateway_port}/hello.txt", 200, token=server.token)
        assert (status, body) == (200, "hello from behind NAT")
        listed = server.cli("replica", "list", "nat")
        assert "nat-laptop" in listed.stdout and "agent" in listed.stdout
        # Many requests, some concurrent, all through the one stream.
        for _ in range(20):
            assert fetch(f"http://127.0.0.1:{gateway_port}/hello.txt", token=server.token)[0] == 200
    finally:
        agent.send_signal(signal.SIGINT)
        out, _ = agent.communicate(timeout=10)
    assert b"Replica nat-laptop of nat is reachable through the gateway" in out
    assert wait_for_status(f"http://127.0.0.1:{gateway_port}/hello.txt", 503, token=server.token)[0] == 503
    deadline = time.monotonic() + 15
    while "nat-laptop" in server.cli("replica", "list", "nat").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "nat-laptop" not in server.cli("replica", "list", "nat").stdout  # its stream ended: it left
    assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0

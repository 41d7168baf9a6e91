"""Replicas behind NAT: a replica listening only on 127.0.0.2 (the gateway cannot connect to it)
becomes reachable through the gateway once `gatehouse agent` opens its outbound stream.

These run the agent whose stream carries the bytes (`GATEHOUSE_AGENT_DATA_PATH=stream`), kept until
the Envoy tunnels replace it everywhere; test_agent_envoy.py runs the agent as it runs by default."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.dns import DnsServer
from tests.support.http import fetch, wait_for_status
from tests.support.server import GATEHOUSE, ServerProcess, running_server

pytestmark = pytest.mark.real
HIDDEN = "127.0.0.2"
RESTARTS = 5
# The server's API alternates between them, behind one name.
SERVER_ADDRESSES = ("127.0.0.1", "127.0.9.1")
BACK_WITHIN_SECONDS = 2.0


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


def serve_through_gateway(
    server: ServerProcess, tmp_path: Path, replica_port: int, extra: str = ""
) -> tuple[Path, str]:
    """Gateway nat-gw and service nat (no `commands`: its replicas come from agents, `extra` is more
    of its YAML); the gateway's configuration file and the service's URL."""
    gateway = tmp_path / "gw.dstack.yml"
    gateway.write_text("type: gateway\nname: nat-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(gateway), "-y").code == 0
    service = tmp_path / "nat.dstack.yml"
    service.write_text(
        f"type: service\nname: nat\ngateway: nat-gw\nport: '{free_port()}:{replica_port}'\n{extra}"
    )
    # -d: its replica comes with the agent, started after.
    applied = server.cli("apply", "-f", str(service), "-y", "-d")
    available = re.search(r"available at (http://\S+)", applied.stdout)
    assert applied.code == 0 and available is not None, applied
    return gateway, available.group(1)


def start_agent(
    server: ServerProcess, replica_port: int, *options: str, stream: bool = True
) -> subprocess.Popen[bytes]:
    """`stream`: the stream carries the bytes (this module's tests); else the agent's default."""
    env = {**server.env, "GATEHOUSE_AGENT_DATA_PATH": "stream"} if stream else server.env
    return subprocess.Popen(
        [
            GATEHOUSE,
            *options,
            "agent",
            "--service",
            "nat",
            "--target",
            f"{HIDDEN}:{replica_port}",
            "--id",
            "nat-laptop",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop_agent(agent: subprocess.Popen[bytes]) -> bytes:
    agent.send_signal(signal.SIGINT)
    out, _ = agent.communicate(timeout=10)
    return out


def test_the_agent_carries_gateway_traffic_to_a_hidden_replica(
    server: ServerProcess, tmp_path: Path, hidden_replica: int
) -> None:
    gateway, service_url = serve_through_gateway(server, tmp_path, hidden_replica)
    url = f"{service_url}/hello.txt"
    # The gateway's side cannot reach the replica directly.
    assert fetch(f"http://127.0.0.1:{hidden_replica}/hello.txt")[0] == 0
    agent = start_agent(server, hidden_replica)
    try:
        status, body = wait_for_status(url, 200, token=server.token)
        assert (status, body) == (200, "hello from behind NAT")
        listed = server.cli("replica", "list", "nat")
        assert "nat-laptop" in listed.stdout and "agent" in listed.stdout
        # Many requests, some concurrent, all through the one stream.
        for _ in range(20):
            assert fetch(url, token=server.token)[0] == 200
    finally:
        out = stop_agent(agent)
    assert b"Replica nat-laptop of nat is reachable through the gateway" in out
    assert wait_for_status(url, 503, token=server.token)[0] == 503
    deadline = time.monotonic() + 15
    while "nat-laptop" in server.cli("replica", "list", "nat").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "nat-laptop" not in server.cli("replica", "list", "nat").stdout  # its stream ended: it left
    assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0


def seconds_until(url: str, answer: tuple[int, str], token: str, within: float = 10.0) -> float:
    """How long until `url` gives `answer`; infinity if it does not within `within` seconds."""
    start = time.monotonic()
    while fetch(url, token=token) != answer:
        if time.monotonic() - start > within:
            return math.inf
        time.sleep(0.02)
    return time.monotonic() - start


def test_the_agent_is_back_soon_after_each_server_restart_wherever_the_name_points(
    tmp_path: Path, hidden_replica: int
) -> None:
    """Five restarts in a row, every other one at another address behind the same name: each time
    the replica answers through the gateway (a body it serves only from this round on) within
    BACK_WITHIN_SECONDS of the server's return."""
    marker = tmp_path / "hello.txt"
    with (
        DnsServer("gatehouse.test", SERVER_ADDRESSES[0]) as names,
        running_server(tmp_path / "home", api_port=free_port()) as server,
    ):
        gateway, service_url = serve_through_gateway(server, tmp_path, hidden_replica)
        url = f"{service_url}/hello.txt"
        agent = start_agent(server, hidden_replica, "--server", names.target(server.api_port))
        try:
            assert wait_for_status(url, 200, token=server.token) == (200, marker.read_text())
            for restart in range(1, RESTARTS + 1):
                server.stop()
                address = SERVER_ADDRESSES[restart % 2]
                names.address = server.extra_env["GATEHOUSE_API_HOST"] = address
                marker.write_text(f"restart {restart}")
                server.start()
                back = seconds_until(url, (200, f"restart {restart}"), server.token)
                assert back < BACK_WITHIN_SECONDS, f"restart {restart} at {address}: back after {back:.2f}s"
        finally:
            out = stop_agent(agent)
        assert out.count(b"Replica nat-laptop of nat is reachable through the gateway") == RESTARTS + 1
        assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0


def test_only_those_who_may_register_replicas_run_an_agent(
    server: ServerProcess, tmp_path: Path, hidden_replica: int
) -> None:
    serve_through_gateway(server, tmp_path, hidden_replica)
    created = server.cli("user", "create", "mallory")
    assert created.code == 0, created.stderr
    assert server.cli("project", "set-member", "main", "mallory").code == 0
    member_env = {**server.env, "GATEHOUSE_TOKEN": created.stdout.split()[-1]}
    refused = subprocess.run(
        [GATEHOUSE, "agent", "--service", "nat", "--target", f"{HIDDEN}:{hidden_replica}", "--id", "m-1"],
        env=member_env,
        capture_output=True,
        timeout=30,
    )
    lines = refused.stderr.decode().strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, lines
    assert "registering replicas needs the admin role" in lines[0]
    assert "m-1" not in server.cli("replica", "list", "nat").stdout

    # A service that runs `commands` takes replicas from its runner only, agents included.
    runs = tmp_path / "runs.dstack.yml"
    runs.write_text("type: service\nname: runs\ngateway: nat-gw\nport: 8000\ncommands: ['sleep 600']\n")
    assert server.cli("apply", "-f", str(runs), "-y", "-d").code == 0
    refused = subprocess.run(
        [GATEHOUSE, "agent", "--service", "runs", "--target", f"{HIDDEN}:{hidden_replica}", "--id", "r-1"],
        env=server.env,
        capture_output=True,
        timeout=30,
    )
    lines = refused.stderr.decode().strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and "commands" in lines[0], lines
    assert server.cli("delete", "-f", str(runs), "-y").code == 0

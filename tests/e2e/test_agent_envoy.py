"""`gatehouse agent` as it runs by default: an Envoy beside the replica opens reverse tunnels to the
gateway's Envoy, and no request passes through the server, so the replica keeps answering while the
server is away. The replica listens only on 127.0.0.2, which the gateway never dials."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from gatehouse.agent_tunnels import TUNNEL_ADDRESS_SUFFIX
from services.common.probes import free_port
from tests.e2e.test_agent import hidden_replica, serve_through_gateway, start_agent, stop_agent
from tests.support.http import fetch, wait_for_status
from tests.support.server import ServerProcess, running_server

__all__ = ["hidden_replica"]
pytestmark = pytest.mark.real
READY = b"Replica nat-laptop of nat is reachable through the gateway (its Envoy keeps tunnels open to"


class Lines:
    """The agent's output as it comes (its pipe read by a thread), and the whole of it at the end."""

    def __init__(self, agent: subprocess.Popen[bytes]) -> None:
        self.lines: list[bytes] = []
        assert agent.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(agent.stdout,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            self.lines.append(line)

    def wait_for(self, text: bytes, count: int, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while sum(text in line for line in self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(text in line for line in self.lines) >= count, self.lines

    def last(self, text: bytes) -> bytes:
        return next((line for line in reversed(self.lines) if text in line), b"")

    def all(self) -> bytes:
        self._thread.join(timeout=10)
        return b"".join(self.lines)


@pytest.fixture
def restartable_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose API port stays the same across restarts, so the agent finds it again."""
    with running_server(tmp_path / "home", api_port=free_port()) as server:
        yield server


def test_the_replica_answers_over_tunnels_while_the_server_is_away(
    restartable_server: ServerProcess, tmp_path: Path, hidden_replica: int
) -> None:
    server = restartable_server
    # Open to anyone: a service with auth fails closed while the server, which answers its checks, is away.
    gateway, service_url = serve_through_gateway(server, tmp_path, hidden_replica, "auth: false\n")
    url = f"{service_url}/hello.txt"
    agent = start_agent(server, hidden_replica, stream=False)
    lines = Lines(agent)
    try:
        assert wait_for_status(url, 200, token=server.token) == (200, "hello from behind NAT")
        listed = server.cli("replica", "list", "nat").stdout
        assert "nat-laptop" in listed and TUNNEL_ADDRESS_SUFFIX in listed, listed
        address = next(line.split()[1] for line in listed.splitlines() if line.startswith("nat-laptop"))

        stopped = time.monotonic()
        server.stop()
        assert time.monotonic() - stopped < 10  # the agent's open stream holds up no shutdown
        answers = []
        for _ in range(20):
            answers.append(fetch(url, token=server.token))
            time.sleep(0.1)
        assert set(answers) == {(200, "hello from behind NAT")}, answers[:3]

        server.start()
        assert fetch(url, token=server.token) == (200, "hello from behind NAT")
        lines.wait_for(READY, 2)  # back at the new server
        # The agent is back with the same identity: the same address, nothing changed at the gateway.
        deadline = time.monotonic() + 10
        while address not in server.cli("replica", "list", "nat").stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        assert address in server.cli("replica", "list", "nat").stdout
    finally:
        stop_agent(agent)
    assert lines.all().count(READY) == 2
    assert wait_for_status(url, 503, token=server.token)[0] == 503
    deadline = time.monotonic() + 15
    while "nat-laptop" in server.cli("replica", "list", "nat").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "nat-laptop" not in server.cli("replica", "list", "nat").stdout
    assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0


def test_the_agent_follows_its_gateway_to_its_https_port_and_back(
    tmp_path: Path, hidden_replica: int
) -> None:
    # No certificate is needed for the HTTPS listener to take tunnels: the ACME directory is nowhere.
    acme = {"GATEHOUSE_ACME_DIRECTORY": f"http://127.0.0.1:{free_port()}/directory"}
    with running_server(tmp_path / "home", extra_env=acme) as server:
        gateway, service_url = serve_through_gateway(server, tmp_path, hidden_replica, "auth: false\n")
        url = f"{service_url}/hello.txt"
        plain = gateway.read_text()
        https_line = f":{server.https_port})".encode()
        agent = start_agent(server, hidden_replica, stream=False)
        lines = Lines(agent)
        try:
            assert wait_for_status(url, 200, token=server.token) == (200, "hello from behind NAT")
            lines.wait_for(READY, 1)
            assert https_line not in lines.last(READY)  # no HTTPS: the tunnel port
            # A domain (Let's Encrypt by default): the gateway's Envoy ends TLS, and takes tunnels there.
            gateway.write_text(plain + "domain: nat.test\n")
            assert server.cli("apply", "-f", str(gateway), "-y").code == 0
            lines.wait_for(https_line, 1, within=30)
            assert wait_for_status(url, 200, token=server.token) == (200, "hello from behind NAT")
            # The domain gone: back to the tunnel port.
            gateway.write_text(plain)
            assert server.cli("apply", "-f", str(gateway), "-y").code == 0
            lines.wait_for(READY, 3, within=30)
            assert https_line not in lines.last(READY)
            answers = [fetch(url, token=server.token) for _ in range(20)]
            assert set(answers) == {(200, "hello from behind NAT")}, answers[:3]
        finally:
            stop_agent(agent)

"""`apply` and the lists in a real 80-column terminal (tmux): generated names and statuses are whole,
no line is wider than the terminal, nothing is cut with an ellipsis."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.real import require_real
from tests.support.server import GATEHOUSE, ServerProcess

pytestmark = pytest.mark.real

WIDTH = 80
DONE = "__all_done__"


class Terminal:
    """A tmux session of its own (a private tmux server), WIDTH columns wide."""

    def __init__(self, workdir: Path) -> None:
        self.socket = f"gatehouse-test-{secrets.token_hex(4)}"
        self.workdir = workdir

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout

    def run(self, env: dict[str, str], commands: list[str], within: float = 240.0) -> list[str]:
        """Runs the commands one after another in the terminal; the screen and its history."""
        script = self.workdir / "session.sh"
        exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
        body = "".join(f'{command}; echo "exit=$?"\n' for command in commands)
        script.write_text(f"cd {shlex.quote(str(self.workdir))}\n{exports}{body}echo {DONE}\nsleep 600\n")
        self.tmux(
            "new-session", "-d", "-s", "cli", "-x", str(WIDTH), "-y", "50",
            f"bash --noprofile --norc {shlex.quote(str(script))}",
        )  # fmt: skip
        self.tmux("set-option", "-t", "cli", "history-limit", "10000")
        deadline = time.monotonic() + within
        while True:
            screen = self.tmux("capture-pane", "-p", "-t", "cli", "-S", "-").splitlines()
            if DONE in screen or time.monotonic() > deadline:
                return screen
            time.sleep(0.5)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        require_real("tmux is not installed (scripts/test-deps installs it)")
    session = Terminal(tmp_path)
    try:
        yield session
    finally:
        session.close()


def test_apply_at_80_columns_shows_whole_names_and_statuses(
    server: ServerProcess, terminal: Terminal, tmp_path: Path
) -> None:
    gateway_port, app_port = free_port(), free_port()
    (tmp_path / "gateway.dstack.yml").write_text(
        "type: gateway\nbackend: local\nregion: local\ndomain: gateways.example.com\ncertificate: null\n"
    )
    service = "a-service-with-a-rather-long-name"
    (tmp_path / "service.dstack.yml").write_text(
        textwrap.dedent(
            f"""\
            type: service
            name: {service}
            port: "{gateway_port}:{app_port}"
            commands: ["python -m http.server {app_port}"]
            """
        )
    )
    env = {
        **{key: value for key, value in server.env.items() if key.startswith("GATEHOUSE_")},
        "PATH": f"{Path(GATEHOUSE).parent}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/root"),
        "TERM": "tmux-256color",
    }
    screen = terminal.run(
        env,
        [
            "gatehouse apply -f gateway.dstack.yml -y",
            "gatehouse gateway list -v",
            "gatehouse apply -f service.dstack.yml -y",
            "gatehouse service list -v",
            "gatehouse delete -f service.dstack.yml -y",
        ],
    )
    text = "\n".join(screen)
    assert DONE in screen, text
    assert text.count("exit=0") == 5, text + server.log()
    assert all(len(line) <= WIDTH for line in screen), text
    assert "…" not in text, text
    gateways = server.cli("gateway", "list", "--json").stdout
    import json

    name = next(
        gateway["name"]
        for gateway in json.loads(gateways)["gateways"]
        if gateway["spec"].get("domain") == "gateways.example.com"
    )
    assert name.startswith("gatehouse-gateway-")
    # The generated gateway name and its status, whole, on one line of each table.
    gateway_rows = [line for line in screen if name in line.split()]
    assert len(gateway_rows) >= 2 and all("running" in line.split() for line in gateway_rows), text
    service_rows = [line for line in screen if service in line.split()]
    assert len(service_rows) >= 2 and all("running" in line.split() for line in service_rows), text
    assert "The service is available at http://" in text
    assert server.cli("gateway", "delete", name, "-y").code == 0

"""A small app whose answers say which version and replica gave them, the service files that run it,
and a bounded request loop: what the rollout tests and benchmark drive a real gateway with."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.http import fetch
from tests.support.server import ServerProcess

# Answers `/` with "<VERSION> replica <n>" (and notes the answer in $SERVED_LOG, when set), and
# `/health` with 200 while $HEALTH_DIR/<n> exists (or always, without HEALTH_DIR), else 503.
APP = r"""
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("VERSION", "v?")
REPLICA = os.environ["GATEHOUSE_REPLICA"]
HEALTH_DIR = os.environ.get("HEALTH_DIR", "")
LOG = os.environ.get("SERVED_LOG", "")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/health":
            healthy = not HEALTH_DIR or os.path.exists(os.path.join(HEALTH_DIR, REPLICA))
            self._answer(200 if healthy else 503, b"ok" if healthy else b"not yet")
            return
        if LOG:
            with open(LOG, "a") as log:
                log.write(f"{VERSION} {REPLICA}\n")
        self._answer(200, f"{VERSION} replica {REPLICA}".encode())

    def _answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def service_file(
    directory: Path,
    name: str,
    gateway_port: int,
    version: str,
    replicas: int = 1,
    probe: str = "{type: http, url: /health, interval: 1s, timeout: 1s, unready_after: 2}",
    command: str | None = None,
    env: dict[str, str] | None = None,
    extra: str = "",
) -> Path:
    app = directory / "app.py"
    app.write_text(APP)
    variables = {"VERSION": version, **(env or {})}
    env_lines = "".join(f"  {key}: {value}\n" for key, value in variables.items())
    path = directory / f"{name}.dstack.yml"
    path.write_text(
        f'type: service\nname: {name}\ngateway: roll-gw\nport: "{gateway_port}:8000"\nauth: false\n'
        f"replicas: {replicas}\nprobes: [{probe}]\nenv:\n{env_lines}"
        f"commands: [{json.dumps(command or f'python {app}')}]\n{extra}"
    )
    return path


class Load:
    """A bounded request loop against one URL, in a thread: every answer's status and body."""

    def __init__(self, url: str, bound: float = 120.0) -> None:
        self.url = url
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._bound = bound
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self._bound
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.answers.append(fetch(self.url, timeout=10))
            time.sleep(0.01)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def bodies(self, since: int = 0) -> Counter[str]:
        return Counter(body for _, body in self.answers[since:])

    def failed(self) -> list[tuple[int, str]]:
        return [answer for answer in self.answers if answer[0] != 200]


def until(check: Callable[[], bool], within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def rollout_of(server: ServerProcess, name: str) -> dict[str, object]:
    shown: dict[str, Any] = json.loads(server.cli("service", "get", name, "--json").stdout)
    rollout: dict[str, object] = shown["status"].get("rollout", {})
    return rollout

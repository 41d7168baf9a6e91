"""A real Envoy subprocess for tests and benchmarks: start it on a bootstrap, read its admin API."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import yaml

_base_ids = count(os.getpid() % 10_000 * 10)
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def envoy_binary() -> Path | None:
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("envoy")
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: a socket file is reached from any network namespace."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class EnvoyProcess:
    """Envoy on `bootstrap`, its admin interface on 127.0.0.1:<admin_port> or on a Unix socket (`pipe`).

    `command_prefix` starts Envoy behind another command that must exec it (so the process is Envoy
    itself, and stopping it stops Envoy), e.g. `ip netns exec NAME` for a network namespace of its
    own: then the admin interface must be a Unix socket, which the test reaches from outside it.
    """

    binary: Path
    workdir: Path
    bootstrap: dict[str, Any]
    concurrency: int = 1
    log_level: str = "warn"
    command_prefix: tuple[str, ...] = ()
    # More of Envoy's command line options (e.g. `--drain-strategy immediate`).
    arguments: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def admin_port(self) -> int:
        return int(self.bootstrap["admin"]["address"]["socket_address"]["port_value"])

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "bootstrap.yaml"
        config.write_text(yaml.safe_dump(self.bootstrap))
        argv = [
            *self.command_prefix,
            str(self.binary),
            *("-c", str(config)),
            "--disable-hot-restart",
            *("--concurrency", str(self.concurrency)),
            *("--base-id", str(next(_base_ids))),
            *("--log-level", self.log_level),
            *self.arguments,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def admin(self, path: str, timeout: float = 5.0, method: str = "GET") -> bytes:
        """The answer's body; an HTTP error (e.g. 503 from /ready before the first configuration)
        raises urllib.error.HTTPError, an OSError, whichever way the interface is reached. Envoy takes
        what changes it (e.g. /drain_listeners) only as `method="POST"`."""
        pipe = self.bootstrap["admin"]["address"].get("pipe")
        if pipe is None:
            url = f"http://127.0.0.1:{self.admin_port}{path}"
            request = urllib.request.Request(url, method=method)
            with _no_proxy.open(request, timeout=timeout) as response:
                return bytes(response.read())
        connection = _UnixHTTPConnection(pipe["path"], timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read()
            if response.status >= 400:
                url = f"unix:{pipe['path']}{path}"
                raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, None)
            return body
        finally:
            connection.close()

    def wait_ready(self, within: float = 30.0) -> None:
        """Until the admin API answers (Envoy may still wait for its initial configuration)."""
        deadline = time.monotonic() + within
        while True:
            if not self.running():
                raise RuntimeError(f"Envoy exited:\n{self.log()}")
            try:
                self.admin("/ready", timeout=1.0)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Envoy's admin API never answered:\n{self.log()}") from None
                time.sleep(0.05)

    def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges whose name starts with `prefix`."""
        text = self.admin("/stats?usedonly&filter=" + prefix).decode()
        values: dict[str, int] = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix) and value.strip().lstrip("-").isdigit():
                values[name] = int(value)
        return values

    def config_dump(self) -> dict[str, Any]:
        return dict(json.loads(self.admin("/config_dump")))

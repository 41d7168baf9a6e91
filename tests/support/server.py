"""A real `gatehouse server` in a subprocess, with its own home and ports, and the CLI against it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.common.probes import free_port
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.local.gateway import envoy_binary
from tests.support.real import require_real

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")
START_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


@dataclass
class ServerProcess:
    home: Path
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    xds_port: int = field(default_factory=free_port)
    # 0 picks a free port at each start; a fixed one lets clients find a restarted server again.
    api_port: int = 0
    # Settings on top of the ones above (e.g. an ACME directory); they win over them.
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            GATEHOUSE_HOME=str(self.home),
            GATEHOUSE_XDS_PORT=str(self.xds_port),
            # The join endpoint's fixed default would collide between servers side by side.
            GATEHOUSE_JOIN_PORT="0",
            GATEHOUSE_METRICS_PORT="0",
            GATEHOUSE_LOCAL_HTTP_PORT=str(self.http_port),
            GATEHOUSE_LOCAL_HTTPS_PORT=str(self.https_port),
            GATEHOUSE_LOCAL_ENVOY_CONCURRENCY="1",
            GATEHOUSE_APPLY_TIMEOUT="100",
        )
        env.pop("GATEHOUSE_SERVER", None)
        env.pop("GATEHOUSE_TOKEN", None)
        env.update(self.extra_env)
        return env

    @property
    def state_file(self) -> Path:
        return self.home / "server" / "server.json"

    def start(self) -> None:
        self.state_file.unlink(missing_ok=True)
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.home / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [GATEHOUSE, "server", "--port", str(self.api_port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.state_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gatehouse server did not start:\n" + self.log())
            time.sleep(0.05)

    @property
    def api(self) -> str:
        return str(json.loads(self.state_file.read_text())["api"])

    @property
    def metrics_port(self) -> int:
        return int(json.loads(self.state_file.read_text())["metrics_port"])

    @property
    def token(self) -> str:
        import yaml

        return str(yaml.safe_load((self.home / "config.yml").read_text())["token"])

    @property
    def system_token(self) -> str:
        return (self.home / "server" / "system-token").read_text().strip()

    def log(self) -> str:
        path = self.home / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None

    def kill_data_plane(self) -> None:
        """Envoys and replicas outlive the server by design; tests clean them up by pid file."""
        for pid_file in [*self.home.glob("gateways/*/*.pid"), *self.home.glob("replicas/*/*/*.pid")]:
            try:
                pid = int(pid_file.read_text().split()[0])
                os.killpg(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass

    def cli(
        self, *args: str, stdin: str = "", cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> CliResult:
        done = subprocess.run(
            [GATEHOUSE, *args],
            env={**self.env, **(env or {})},
            input=stdin.encode(),
            capture_output=True,
            cwd=cwd or self.home,
            timeout=120,
        )
        return CliResult(done.returncode, done.stdout.decode(), done.stderr.decode())


@contextlib.contextmanager
def running_server(
    home: Path, extra_env: dict[str, str] | None = None, api_port: int = 0
) -> Iterator[ServerProcess]:
    """A started server with local Envoys (skipped where there is no Envoy), stopped after with its
    Envoys and replicas; `extra_env` on top of its environment."""
    try:
        envoy_binary()
    except BackendError as error:
        require_real(str(error))
    process = ServerProcess(home=home, api_port=api_port, extra_env=extra_env or {})
    process.start()
    try:
        yield process
    finally:
        process.stop()
        process.kill_data_plane()

"""The Envoy `gatehouse agent` runs beside its replica (gatehouse/agent_bootstrap.py): its files, its
process, and keeping its tunnels up.

The agent's key is made here and kept, with the certificate the server gave for it, in a private
directory (`$GATEHOUSE_HOME/agents/<project>/<service>/<replica>`), so an agent started again keeps
its identity. Envoy gets a bootstrap only: it needs nothing from the server once started.

Envoy waits longer after each failed attempt to reach its gateway (1 s, 2 s, 4 s … 30 s, not
configurable in 1.40), so a gateway Envoy that was away a few seconds would find its agents back only
after up to 30 s. The watch here restarts the agent's Envoy (which starts over at once) when it has
no tunnel while the port it dials on the gateway answers: agents are back within a second or two.

Stopping drains first: Envoy tells the gateway (HTTP/2 GOAWAY) to send nothing new over its tunnels,
lets the requests in flight finish, closes the idle tunnels, and only then exits, so a replica's
agent restarts without a failed request when another agent of the service takes the load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gatehouse.agent_bootstrap import AgentEnvoy, render_agent_bootstrap
from gatehouse.agent_keys import certificate_request, new_key
from gatehouse.client.defaults import gatehouse_home
from gatehouse.private_files import make_private_directory, socket_path, write_private
from gatehouse.v1 import tunnel_pb2

# Envoy drains at once when asked (GOAWAY to the gateway), and gives in-flight requests this long.
DRAIN_FLAGS = ("--drain-strategy", "immediate", "--drain-time-s", "5")
STOP_WITHIN_SECONDS = 6.0
WATCH_SECONDS = 0.25
# Without a tunnel this long while the gateway's port answers, Envoy is restarted…
NO_TUNNEL_SECONDS = 0.5
# …at most this often (a fresh one gets this long to open its tunnels), and less often while that
# does not help, down to once every MAX_PATIENCE_SECONDS.
RESTART_EVERY_SECONDS = 3.0
MAX_PATIENCE_SECONDS = 60.0
TUNNELS_STAT = "http.tunnels.downstream_cx_active"
REQUESTS_STAT = "http.tunnels.downstream_rq_active"


def envoy_binary() -> str | None:
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("envoy")


def concurrency() -> int:
    """Envoy's worker threads: `GATEHOUSE_AGENT_ENVOY_CONCURRENCY`, else one. The replica's machine
    is the replica's: one worker carries ~10,000 small requests a second, and on a two-core machine a
    second one cost more in contention than it gave (bench/agent_tunnel.py)."""
    configured = os.environ.get("GATEHOUSE_AGENT_ENVOY_CONCURRENCY", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return 1


class AgentIdentity:
    """The agent's key and certificate on disk."""

    def __init__(self, project: str, service: str, replica: str, home: Path | None = None) -> None:
        self.directory = (home or gatehouse_home()) / "agents" / project / service / replica
        make_private_directory(self.directory)
        self.key_file = self.directory / "agent.key"
        self.certificate_file = self.directory / "agent.pem"
        self.ca_file = self.directory / "ca.pem"
        if not self.key_file.exists():
            write_private(self.key_file, new_key())

    def hello(self, project: str, service: str, replica: str, port: int) -> tunnel_pb2.TunnelHello:
        certificate = self.certificate_file.read_bytes() if self.certificate_file.exists() else b""
        return tunnel_pb2.TunnelHello(
            project=project,
            service=service,
            replica_id=replica,
            certificate_request=certificate_request(self.key_file.read_bytes(), replica),
            certificate=certificate,
            target_port=port,
        )

    def keep(self, tunnel: tunnel_pb2.AgentTunnel) -> None:
        _write_if_changed(self.certificate_file, tunnel.certificate)
        _write_if_changed(self.ca_file, tunnel.ca)


class AgentEnvoyProcess:
    """One Envoy on one bootstrap; its admin interface is a Unix socket only its user may open."""

    def __init__(self, binary: str, directory: Path, agent: AgentEnvoy) -> None:
        self.agent = agent
        self.directory = directory
        make_private_directory(directory)
        self.bootstrap = render_agent_bootstrap(agent)
        self._process: subprocess.Popen[bytes] | None = None
        self._binary = binary

    def start(self) -> None:
        config = self.directory / "bootstrap.json"
        self._stop_left_over(config)
        write_private(config, json.dumps(self.bootstrap, indent=2).encode())
        Path(self.agent.admin_socket).unlink(missing_ok=True)
        argv = [
            self._binary, "-c", str(config), "--disable-hot-restart", "--log-level", "warn",
            "--concurrency", str(self.agent.workers), *DRAIN_FLAGS,
        ]  # fmt: skip
        with (self.directory / "envoy.log").open("ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        (self.directory / "envoy.pid").write_text(str(self._process.pid))

    def _stop_left_over(self, config: Path) -> None:
        """An Envoy an agent killed without a chance to stop it left here (still on this bootstrap)."""
        try:
            pid = int((self.directory / "envoy.pid").read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(config).encode() in command:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = (self.directory / "envoy.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    async def stats(self, *names: str) -> dict[str, int]:
        pattern = "|".join(f"^{name.replace('.', '[.]')}$" for name in names)
        body = await _admin(self.agent.admin_socket, "GET", f"/stats?filter={pattern}")
        values: dict[str, int] = {}
        for line in body.decode(errors="replace").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                values[name] = int(value)
        return values

    async def tunnels(self) -> int:
        try:
            return (await self.stats(TUNNELS_STAT)).get(TUNNELS_STAT, 0)
        except OSError:
            return 0

    async def stop(self) -> None:
        """Drain (GOAWAY over every tunnel, idle ones closed), wait for in-flight requests, exit."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        deadline = time.monotonic() + STOP_WITHIN_SECONDS
        try:
            await _admin(self.agent.admin_socket, "POST", "/drain_listeners?graceful")
            while time.monotonic() < deadline:
                left = await self.stats(TUNNELS_STAT, REQUESTS_STAT)
                if not any(left.values()):
                    break
                await asyncio.sleep(0.05)
        except OSError:
            pass
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 5)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


class AgentEnvoyRunner:
    """Keeps an Envoy with the latest tunnel configuration running, and its tunnels up."""

    def __init__(
        self,
        binary: str,
        identity: AgentIdentity,
        project: str,
        target: tuple[str, int],
        say: Callable[[str], None],
    ) -> None:
        self._binary = binary
        self._identity = identity
        self._project = project
        self._target = target
        self._say = say
        self._envoy: AgentEnvoyProcess | None = None
        self._generation = 0
        self._started = 0.0
        self._watch: asyncio.Task[None] | None = None

    async def apply(self, tunnel: tunnel_pb2.AgentTunnel) -> None:
        """Serve over `tunnel`; a new configuration starts a new Envoy and stops the old one once the
        new one has tunnels (make before break)."""
        self._identity.keep(tunnel)
        old = self._envoy
        if (
            old is not None
            and old.running()
            and dataclasses.replace(old.agent, admin_socket="") == self._agent(tunnel, "")
        ):
            return
        fresh = self._start(self._agent(tunnel, ""))
        if old is not None:
            await self._until_tunnels(fresh, within=5.0)
            await old.stop()
        if self._watch is None:
            self._watch = asyncio.create_task(self._keep_up())

    def _start(self, agent: AgentEnvoy) -> AgentEnvoyProcess:
        """A new Envoy for `agent` beside the one serving now (directory and admin socket alternate)."""
        self._generation += 1
        where = self._identity.directory / f"envoy-{self._generation % 2}"
        admin = socket_path(self._identity.directory / f"admin-{self._generation % 2}.sock")
        fresh = AgentEnvoyProcess(self._binary, where, dataclasses.replace(agent, admin_socket=admin))
        fresh.start()
        self._started = time.monotonic()
        self._envoy = fresh
        return fresh

    @property
    def envoy(self) -> AgentEnvoyProcess | None:
        """The Envoy serving now."""
        return self._envoy

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._envoy is not None:
            await self._envoy.stop()
            self._envoy = None

    def _agent(self, tunnel: tunnel_pb2.AgentTunnel, admin_socket: str) -> AgentEnvoy:
        return AgentEnvoy(
            node=tunnel.node,
            agent_name=tunnel.agent_name,
            project=self._project,
            gateway_id=tunnel.gateway_id,
            gateway_host=tunnel.host,
            gateway_port=tunnel.port,
            target_host=self._target[0],
            target_port=self._target[1],
            certificate_file=str(self._identity.certificate_file),
            key_file=str(self._identity.key_file),
            ca_file=str(self._identity.ca_file),
            admin_socket=admin_socket,
            workers=concurrency(),
        )

    async def _until_tunnels(self, envoy: AgentEnvoyProcess, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline and not await envoy.tunnels():
            await asyncio.sleep(0.05)

    async def _keep_up(self) -> None:
        without_since: float | None = None
        # A fresh Envoy gets this long to open its tunnels; it grows while restarts do not help (the
        # gateway answers but refuses the tunnels), and is short again once they are up.
        patience = RESTART_EVERY_SECONDS
        started = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            envoy = self._envoy
            if envoy is None:
                continue
            now = time.monotonic()
            if not envoy.running():
                if now - started >= 1.0:
                    self._say(f"The agent's Envoy exited ({envoy.log_tail()}); starting it again")
                    started = now
                    envoy.start()
                continue
            if await envoy.tunnels():
                # Up: a later loss is the gateway's, and worth a restart at once.
                without_since, patience, started, self._started = None, RESTART_EVERY_SECONDS, 0.0, 0.0
                continue
            without_since = without_since or now
            if now - without_since < NO_TUNNEL_SECONDS or now - max(started, self._started) < patience:
                continue
            if await _answers(envoy.agent.gateway_host, envoy.agent.gateway_port):
                # Envoy waits up to 30 s before trying again; a fresh one tries at once (started
                # before the old one stops: it has no tunnel to drain).
                started = now
                patience = min(patience * 2, MAX_PATIENCE_SECONDS)
                self._start(envoy.agent)
                await envoy.stop()


async def _answers(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _admin(admin_socket: str, method: str, path: str) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(admin_socket), 2.0)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: envoy\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise OSError(f"Envoy's admin answered {head[:40]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return body


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


def _write_if_changed(path: Path, content: bytes) -> None:
    if not path.exists() or path.read_bytes() != content:
        write_private(path, content)

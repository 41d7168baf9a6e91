"""A gateway host played on this machine: the files a host gets (written by its startup script or
mounted from its pod's Secret) under a scratch root, `join.sh` run from there against a real join
endpoint, and a real Envoy started with the host's bootstrap against a real gateway_xds over mTLS.

Paths in the host's files are absolute (/etc/gatehouse, /var/lib/gatehouse); `relocate` rewrites
the JSON files Envoy reads so they point under the root, and `GATEHOUSE_ROOT` does the same for
join.sh."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from envoy.config.core.v3 import base_pb2

from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Backend
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener, VirtualHost
from gateway_xds.publish import publish
from gateway_xds.server.peer import PeerCertificateAuthorizer
from gateway_xds.server.reporter import RecordingReporter
from gateway_xds.server.server import XdsServer, build_xds_server
from services.common.internal_ca import InternalCA, xds_server_credentials
from services.common.probes import free_port, unix_http_get
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.local.gateway import envoy_binary
from services.provisioner.envoy_bootstrap import HOST_ADMIN_SOCKET
from services.provisioner.hosts.identity import CONFIG_DIR, IDENTITY_DIR, IDENTITY_PATH, JoinEndpoint
from services.provisioner.join import JoinServer, JoinTokens
from tests.support.real import require_real

DEADLINE_SECONDS = 20.0


def in_root(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def certificate_of(root: Path) -> x509.Certificate:
    """The client certificate join.sh keeps on the host (followed by its key, in one file)."""
    return x509.load_pem_x509_certificate(in_root(root, IDENTITY_PATH).read_bytes())


def relocate(root: Path) -> None:
    """Points the host's JSON files (bootstrap, SDS resource) at the files under `root`."""
    for path in in_root(root, CONFIG_DIR).glob("*.json"):
        text = path.read_text()
        for directory in (CONFIG_DIR, IDENTITY_DIR):
            text = text.replace(f'"{directory}/', f'"{root}{directory}/')
        path.write_text(text)


def in_root_argv(root: Path, argv: Sequence[str]) -> list[str]:
    """A host's command line with its absolute configuration paths under `root`."""
    return [str(root) + arg if arg.startswith(f"{CONFIG_DIR}/") else arg for arg in argv]


async def run_on_host(root: Path, argv: Sequence[str], **env: str) -> tuple[int, str]:
    """Runs a host's command (join.sh) as the host would, under `root`; its exit code and stderr.

    Asynchronously: the join endpoint it talks to runs on this event loop."""
    process = await asyncio.create_subprocess_exec(
        *in_root_argv(root, argv),
        env={"PATH": "/usr/bin:/bin", "GATEHOUSE_ROOT": str(root), **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    return await process.wait(), stderr.decode()


class RecordingAuthorizer(PeerCertificateAuthorizer):
    """The real authorizer, noting the serial number of every client certificate it is shown."""

    def __init__(self) -> None:
        self.serials: list[int] = []

    async def authorize(self, context: grpc.aio.ServicerContext, node: base_pb2.Node) -> str:
        for pem in context.auth_context().get("x509_pem_cert", ()):
            self.serials.append(x509.load_pem_x509_certificate(pem).serial_number)
        return await super().authorize(context, node)


@dataclass
class ControlPlane:
    """gateway_xds over mTLS and the join endpoint, both with one internal CA."""

    ca: InternalCA
    cache: SnapshotCache
    reporter: RecordingReporter
    authorizer: RecordingAuthorizer
    server: XdsServer
    tokens: JoinTokens
    join: JoinEndpoint

    @property
    def port(self) -> int:
        return self.server.port

    async def restart_xds(self) -> None:
        """gateway_xds goes away and comes back on its port: every Envoy connects again."""
        await self.server.stop(grace=None)
        credentials = xds_server_credentials(self.ca, [])
        self.server = build_xds_server(
            self.cache, self.authorizer, self.reporter, f"127.0.0.1:{self.port}", credentials
        )
        await self.server.start()


@contextlib.asynccontextmanager
async def control_plane(directory: Path, ca: InternalCA | None = None) -> AsyncIterator[ControlPlane]:
    ca = ca or InternalCA.create()
    cache, reporter, authorizer = SnapshotCache(), RecordingReporter(), RecordingAuthorizer()
    server = build_xds_server(cache, authorizer, reporter, "127.0.0.1:0", xds_server_credentials(ca, []))
    await server.start()
    tokens = JoinTokens(directory / "join-tokens.json")
    join_server = JoinServer(ca, tokens, ["127.0.0.1"])
    await join_server.start("127.0.0.1", 0)
    join = JoinEndpoint(f"https://127.0.0.1:{join_server.port}", ca.certificate_pem.decode())
    plane = ControlPlane(ca, cache, reporter, authorizer, server, tokens, join)
    try:
        yield plane
    finally:
        await join_server.stop()
        await plane.server.stop(grace=None)


class HostEnvoy:
    """A real Envoy started with a host's own arguments; only the admin socket moves into the host's
    scratch root, as every path the host writes does."""

    def __init__(self, root: Path, args: Sequence[str], log: Path) -> None:
        try:
            binary = envoy_binary()
        except BackendError as error:
            require_real(str(error))
        self.admin_socket = str(root / HOST_ADMIN_SOCKET.lstrip("/"))
        Path(self.admin_socket).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [binary, *in_root_argv(root, args)]
        admin = {"admin": {"address": {"pipe": {"path": self.admin_socket}}}}
        argv += ["--config-yaml", json.dumps(admin)]
        argv += ["--disable-hot-restart", "--concurrency", "1", "--base-id", str(os.getpid() + 1)]
        self.log = log
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    async def wait_live(self) -> None:
        """/ready says LIVE only once the initial configuration has been applied."""
        while "LIVE" not in str(await unix_http_get(self.admin_socket, "/ready")):
            assert self.process.poll() is None, self.log.read_text()
            await asyncio.sleep(0.1)

    async def client_serials(self) -> set[int]:
        """Serial numbers of the certificates Envoy holds now, the CA's and the client's."""
        status, body = await unix_http_get(self.admin_socket, "/certs")
        assert status == 200, body
        held = json.loads(body)
        return {
            int(entry["serial_number"], 16)
            for cert in held["certificates"]
            for entry in cert.get("cert_chain", [])
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def publish_listener(plane: ControlPlane, gateway_id: str, revision: int) -> int:
    """A one-listener configuration for the gateway; the listener's port."""
    port = free_port()
    ir = GatewayIR(
        gateway_id,
        listeners=(HTTPListener("port-80", "127.0.0.1", port, (VirtualHost("v", ("a.test",), "b"),)),),
        backends=(Backend("b", (), connect_timeout_ms=1000),),
    )
    publish(plane.cache, ir, revision=revision)
    return port


async def wait_acked(plane: ControlPlane, node_id: str, revision: int, envoy: HostEnvoy) -> None:
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            await plane.reporter.wait_for(
                lambda r: r.kind == "acked" and r.node_id == node_id and r.revision == revision
            )
    except TimeoutError:
        raise AssertionError(
            f"no ACK of revision {revision} from {node_id}; reports {plane.reporter.reports}; "
            f"Envoy's log:\n{envoy.log.read_text()}"
        ) from None

"""A gateway host played on this machine: the files a host gets (written by its startup script or
mounted from its pod's Secret) under a scratch root, `join.sh` run from there against a real join
endpoint, and a real Envoy started with the host's bootstrap against a real gateway_xds over mTLS.

Paths in the host's files are absolute (/etc/gatehouse, /var/lib/gatehouse); `relocate` rewrites
the JSON files Envoy reads so they point under the root, and `GATEHOUSE_ROOT` does the same for
join.sh. `run_startup_data` runs a cloud host's startup data as the host would (unpacking included),
with `docker`, `systemctl` and `apt-get` recording their calls; `AdsEnvoy` stands in for Envoy where a
real one would bind a cloud host's ports (:80 and :443 on every address) on this shared machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.service.discovery.v3 import discovery_pb2

from gatehouse.envoy_bootstrap import HOST_ADMIN_SOCKET
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.backends import Backend
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.publish import publish
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET
from gateway_xds.server.peer import PeerCertificateAuthorizer
from gateway_xds.server.server import XdsServer, build_xds_server
from gateway_xds.testing.ads_client import DeltaAdsClient
from gateway_xds.testing.reporters import RecordingReporter
from services.common.internal_ca import XDS_SERVER_NAME, InternalCA, xds_server_credentials
from services.common.probes import free_port, unix_http_get
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.local.gateway import envoy_binary
from services.provisioner.hosts.identity import (
    BOOTSTRAP_PATH,
    CA_PATH,
    CONFIG_DIR,
    IDENTITY_DIR,
    IDENTITY_PATH,
    JoinEndpoint,
)
from services.provisioner.join import JoinServer, JoinTokens
from tests.support.join_tokens import local_join_tokens
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


STUBBED = ("docker", "systemctl", "apt-get")


@dataclass
class HostRun:
    """How a host's startup data ran: its exit code, what it printed (the console), the calls made."""

    code: int
    console: str
    calls: list[list[str]]


async def run_startup_data(
    data: str, scratch: Path, failing: Mapping[str, str] | None = None, absent: Collection[str] = ()
) -> HostRun:
    """Runs `data` as a cloud host runs its user data: an executable file whose `#!` line picks the
    shell (the stub unpacks the script), as root of the host `scratch/host`. `failing`: commands that
    print the given line and exit 100 (`apt-get` with the dpkg lock held); `absent`: commands the
    host lacks (`docker` before it is installed)."""
    stubs = scratch / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    calls = scratch / "calls.jsonl"
    calls.touch()
    for name in set(STUBBED) - set(absent):
        stub = stubs / name
        failure = (failing or {}).get(name)
        stub.write_text(
            "#!/usr/bin/env python3\nimport json, os, sys\n"
            f"open({str(calls)!r}, 'a')"
            ".write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + '\\n')\n"
            + ("" if failure is None else f"print({failure!r}, file=sys.stderr)\nsys.exit(100)\n")
        )
        stub.chmod(0o755)
    user_data = scratch / "user-data"
    user_data.write_text(data)
    user_data.chmod(0o700)
    process = await asyncio.create_subprocess_exec(
        str(user_data),
        env={"PATH": f"{stubs}:/usr/bin:/bin", "GATEHOUSE_ROOT": str(scratch / "host")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    output, _ = await process.communicate()
    code = await process.wait()
    return HostRun(
        code, output.decode(errors="replace"), [json.loads(line) for line in calls.read_text().splitlines()]
    )


class AdsEnvoy:
    """Envoy's part towards gateway_xds only, from a host's own files: its node id and the way to
    gateway_xds from the bootstrap, mTLS with the certificate join.sh got; subscribes as Envoy does
    and acknowledges everything. Binds nothing."""

    def __init__(self, root: Path) -> None:
        bootstrap = json.loads(in_root(root, BOOTSTRAP_PATH).read_text())
        self.node_id = str(bootstrap["node"]["id"])
        [cluster] = bootstrap["static_resources"]["clusters"]
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        address = endpoint["address"]["socket_address"]
        self.target = f"{address['address']}:{address['port_value']}"
        identity = in_root(root, IDENTITY_PATH).read_bytes()
        cut = identity.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
        self._credentials = grpc.ssl_channel_credentials(
            root_certificates=in_root(root, CA_PATH).read_bytes(),
            private_key=identity[cut:],
            certificate_chain=identity[:cut],
        )
        self._task: asyncio.Task[None] | None = None
        self.acked = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        options = [("grpc.ssl_target_name_override", XDS_SERVER_NAME)]
        async with grpc.aio.secure_channel(self.target, self._credentials, options=options) as channel:
            client = DeltaAdsClient(channel, self.node_id, read_timeout=3600)
            for type_url in (CLUSTER, LISTENER, SCOPED_ROUTE):
                await client.request(type_url)
            routes: set[str] = set()
            secrets: set[str] = set()
            while True:
                response: discovery_pb2.DeltaDiscoveryResponse = await client.recv()
                await client.ack(response)
                self.acked += 1
                if response.type_url == CLUSTER and response.resources:
                    await client.request(ENDPOINT, [resource.name for resource in response.resources])
                named = _secret_names(response) - secrets
                if named:
                    # As Envoy does: the secrets its listeners' and clusters' TLS name (SDS).
                    secrets |= named
                    await client.request(SECRET, sorted(named))
                wanted = _route_names(response) - routes
                if wanted:
                    # As Envoy does: the route configurations its listeners and scopes name.
                    routes |= wanted
                    await client.request(ROUTE, sorted(wanted))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def _secret_names(response: discovery_pb2.DeltaDiscoveryResponse) -> set[str]:
    """The SDS secrets a response's listeners (downstream TLS) or clusters (upstream TLS) name."""
    sockets = []
    for resource in response.resources:
        if response.type_url == LISTENER:
            listener = listener_pb2.Listener()
            resource.resource.Unpack(listener)
            chains = [*listener.filter_chains, listener.default_filter_chain]
            sockets += [chain.transport_socket for chain in chains if chain.HasField("transport_socket")]
        elif response.type_url == CLUSTER:
            cluster = cluster_pb2.Cluster()
            resource.resource.Unpack(cluster)
            if cluster.HasField("transport_socket"):
                sockets.append(cluster.transport_socket)
    names: set[str] = set()
    for socket in sockets:
        downstream, upstream = tls_pb2.DownstreamTlsContext(), tls_pb2.UpstreamTlsContext()
        if socket.typed_config.Unpack(downstream):
            common = downstream.common_tls_context
        elif socket.typed_config.Unpack(upstream):
            common = upstream.common_tls_context
        else:
            continue
        names |= {config.name for config in common.tls_certificate_sds_secret_configs}
        names.add(common.validation_context_sds_secret_config.name)
        names.add(common.combined_validation_context.validation_context_sds_secret_config.name)
    return names - {""}


def _route_names(response: discovery_pb2.DeltaDiscoveryResponse) -> set[str]:
    """The route configurations a response's listeners (RDS) or route scopes refer to."""
    names: set[str] = set()
    for resource in response.resources:
        if response.type_url == SCOPED_ROUTE:
            scope = scoped_route_pb2.ScopedRouteConfiguration()
            resource.resource.Unpack(scope)
            names.add(scope.route_configuration_name)
        elif response.type_url == LISTENER:
            listener = listener_pb2.Listener()
            resource.resource.Unpack(listener)
            chains = [*listener.filter_chains, listener.default_filter_chain]
            for network_filter in (f for chain in chains for f in chain.filters):
                manager = http_connection_manager_pb2.HttpConnectionManager()
                if network_filter.typed_config.Unpack(manager) and manager.HasField("rds"):
                    names.add(manager.rds.route_config_name)
    return names - {""}


class RecordingAuthorizer(PeerCertificateAuthorizer):
    """The real authorizer, noting the serial number of every client certificate it is shown."""

    def __init__(self) -> None:
        self.serials: list[int] = []

    async def authorize(self, context: grpc.aio.ServicerContext[Any, Any], node: base_pb2.Node) -> str:
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
    tokens = local_join_tokens()
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

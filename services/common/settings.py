"""Settings every process reads from the environment, with the embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gatehouse import metrics
from gatehouse.agent_tunnels import DEFAULT_TUNNEL_PORT
from gatehouse.client.defaults import DEFAULT_API_ADDRESS, DEFAULT_XDS_PORT, gatehouse_home
from services.common.addresses import Network
from services.common.project_backends import parse_networks

# Where gateway hosts join and renew their xDS client certificate: fixed, since a host keeps the
# address it was given for as long as it lives (API 50051, xDS 50052).
DEFAULT_JOIN_PORT = 50055


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"error: {name}={raw!r} is not a number") from None


def _networks_env(name: str) -> tuple[Network, ...]:
    try:
        return parse_networks(os.environ.get(name, ""))
    except ValueError as error:
        raise SystemExit(f"error: {name}: {error}") from None


def _default_local_port(privileged: int, unprivileged: int) -> int:
    return privileged if os.geteuid() == 0 else unprivileged


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    api_host: str
    api_port: int
    xds_host: str
    xds_port: int
    # The local backend: where gateways without an `address` bound before they had one each, and
    # which ports stand for :80 and :443.
    local_bind: str
    local_http_port: int
    local_https_port: int
    # How long the event feed keeps history before watchers must list again.
    watch_history: int
    # Seconds without a heartbeat after which an externally run replica leaves the endpoints.
    replica_ttl: float = 30.0
    # host:port where cloud gateway hosts reach gateway_xds; empty: the xDS listen address.
    xds_public_address: str = ""
    # Where gateway hosts exchange their join token and renew (HTTPS, on the xDS host; 0 picks a free
    # port, which only suits tests: a host cannot follow it across restarts).
    join_port: int = DEFAULT_JOIN_PORT
    # A plaintext port answering only gRPC health for gateway_xds (its xDS port wants a client
    # certificate, which orchestrators' probes lack); 0: none.
    xds_health_port: int = 0
    # Local replicas: each in a network namespace of its own with an address from this network
    # ("namespace"), or all on this machine's network ("host"); "auto" picks namespaces where they
    # can be made.
    local_replica_network: str = "auto"
    local_replica_subnet: str = "10.213.0.0/16"
    # Gateway hosts (VMs and pods): the Envoy image (empty: the pinned default in the provisioner's
    # hosts/startup.py), the digest it is pinned by (`sha256:...`), and the registry mirror VM hosts
    # pull Docker Hub images through (None: the default mirror; empty: none).
    envoy_image: str = ""
    envoy_image_digest: str = ""
    envoy_registry_mirror: str | None = None
    # Seconds a cloud gateway host (VM or pod) has from being made to its Envoy connecting to
    # gateway_xds; one that has not is shown with its console output and replaced.
    host_connect_timeout: float = 600.0
    # The gateway port where `gatehouse agent`s' Envoys open their reverse tunnels.
    agent_tunnel_port: int = DEFAULT_TUNNEL_PORT
    # The local backend: where it keeps the state of the Envoys and replicas it runs on this machine
    # (None: the home). Copies of the provisioner on one machine share it, so a new leader adopts
    # what the last one started.
    local_state: Path | None = None
    # host:port list where local gateways' Envoys reach gateway_xds copies (empty: the xDS listen
    # address).
    local_xds_address: str = ""
    # Networks that are not public but that projects' backend endpoints (`gatehouse backend add`)
    # may reach all the same: emulators, private clouds. Link-local (metadata) addresses never.
    project_backend_networks: tuple[Network, ...] = ()

    @property
    def local_state_dir(self) -> Path:
        return self.local_state or self.home

    # Seconds a local replica has from starting to answering on its port and passing its probes; a
    # new version's replica that has not is rolled back.
    replica_ready_timeout: float = 120.0
    # Seconds a replica taken out of the endpoints keeps running before it is stopped: the gateway's
    # Envoys take it out and the requests in flight to it finish.
    replica_drain: float = 5.0
    # Prometheus metrics (and the server's dashboard), HTTP; 0 picks a free port.
    metrics_host: str = metrics.DEFAULT_HOST
    metrics_port: int = metrics.DEFAULT_PORT

    @property
    def server_dir(self) -> Path:
        return self.home / "server"

    @property
    def api_address(self) -> str:
        return f"{self.api_host}:{self.api_port}"

    @classmethod
    def from_env(
        cls, api_host: str | None = None, api_port: int | None = None, metrics_port: int | None = None
    ) -> Settings:
        home = gatehouse_home()
        default_db = f"sqlite+aiosqlite:///{home / 'server' / 'data' / 'gatehouse.sqlite'}"
        default_host, _, default_port = DEFAULT_API_ADDRESS.partition(":")
        return cls(
            home=home,
            db_url=os.environ.get("GATEHOUSE_DB_URL") or default_db,
            api_host=api_host or os.environ.get("GATEHOUSE_API_HOST") or default_host,
            api_port=api_port if api_port is not None else _int_env("GATEHOUSE_API_PORT", int(default_port)),
            xds_host=os.environ.get("GATEHOUSE_XDS_HOST") or "127.0.0.1",
            xds_port=_int_env("GATEHOUSE_XDS_PORT", DEFAULT_XDS_PORT),
            local_bind=os.environ.get("GATEHOUSE_LOCAL_BIND") or "127.0.0.1",
            local_http_port=_int_env("GATEHOUSE_LOCAL_HTTP_PORT", _default_local_port(80, 8080)),
            local_https_port=_int_env("GATEHOUSE_LOCAL_HTTPS_PORT", _default_local_port(443, 8443)),
            watch_history=_int_env("GATEHOUSE_WATCH_HISTORY", 100_000),
            replica_ttl=float(_int_env("GATEHOUSE_REPLICA_TTL", 30)),
            xds_public_address=os.environ.get("GATEHOUSE_XDS_PUBLIC_ADDRESS", ""),
            join_port=_int_env("GATEHOUSE_JOIN_PORT", DEFAULT_JOIN_PORT),
            xds_health_port=_int_env("GATEHOUSE_XDS_HEALTH_PORT", 0),
            local_replica_network=os.environ.get("GATEHOUSE_LOCAL_REPLICA_NETWORK") or "auto",
            local_replica_subnet=os.environ.get("GATEHOUSE_LOCAL_REPLICA_SUBNET") or "10.213.0.0/16",
            envoy_image=os.environ.get("GATEHOUSE_ENVOY_IMAGE", ""),
            envoy_image_digest=os.environ.get("GATEHOUSE_ENVOY_IMAGE_DIGEST", ""),
            envoy_registry_mirror=os.environ.get("GATEHOUSE_ENVOY_REGISTRY_MIRROR"),
            host_connect_timeout=float(_int_env("GATEHOUSE_HOST_CONNECT_TIMEOUT", 600)),
            agent_tunnel_port=_int_env("GATEHOUSE_AGENT_TUNNEL_PORT", DEFAULT_TUNNEL_PORT),
            local_state=Path(os.environ["GATEHOUSE_LOCAL_STATE"])
            if os.environ.get("GATEHOUSE_LOCAL_STATE")
            else None,
            local_xds_address=os.environ.get("GATEHOUSE_LOCAL_XDS_ADDRESS", ""),
            project_backend_networks=_networks_env("GATEHOUSE_PROJECT_BACKEND_NETWORKS"),
            replica_ready_timeout=float(_int_env("GATEHOUSE_REPLICA_READY_TIMEOUT", 120)),
            replica_drain=float(_int_env("GATEHOUSE_REPLICA_DRAIN", 5)),
            metrics_host=os.environ.get(metrics.HOST_ENV) or metrics.DEFAULT_HOST,
            metrics_port=(
                metrics_port if metrics_port is not None else _int_env(metrics.PORT_ENV, metrics.DEFAULT_PORT)
            ),
        )

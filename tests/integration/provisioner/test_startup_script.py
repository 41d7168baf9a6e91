"""The startup script a cloud gateway host runs, run here: it exchanges its join token for a client
certificate, the Envoy bootstrap it writes starts a real Envoy that reaches LIVE against a local
gateway_xds over mTLS and acknowledges its configuration, and the renewal unit it installs renews
the certificate."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import shlex
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatehouse.v1 import resources_pb2
from services.common.internal_ca import InternalCA
from services.common.probes import http_get
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.hosts.identity import BOOTSTRAP_PATH, IDENTITY_PATH, JOIN_TOKEN_PATH
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from services.provisioner.hosts.startup import (
    DEFAULT_REGISTRY_MIRROR,
    DOCKER_DAEMON_CONFIG,
    ENVOY_IMAGE,
    RENEW_TIMER_PATH,
    RENEW_UNIT_PATH,
    UNIT_PATH,
    envoy_args,
    unpack_startup_script,
)
from services.provisioner.join import JoinSetup
from tests.integration.provisioner.hostsim import (
    ControlPlane,
    HostEnvoy,
    certificate_of,
    control_plane,
    in_root,
    publish_listener,
    relocate,
    run_on_host,
    run_startup_data,
    wait_acked,
)
from tests.support.no_cloud import NoCloud

pytestmark = pytest.mark.real

GATEWAY_ID = "gw-startup0001"
HOST_INDEX = 1


def gateway() -> resources_pb2.Gateway:
    spec = resources_pb2.GatewaySpec(backend="aws", region="eu-west-1", public_ip=True, replicas=2)
    return resources_pb2.Gateway(id=GATEWAY_ID, project="main", name="startup", spec=spec)


def plan_of(plane: ControlPlane) -> GatewayPlan:
    """The plan a cloud backend makes: each host's script carries a new join token."""
    backend = CloudGatewayBackend(
        "aws",
        driver=NoCloud(),
        xds=XdsEndpoint("127.0.0.1", plane.port),
        join=JoinSetup(plane.tokens, plane.join),
    )
    return backend.plan(gateway())


async def run_script(script: str, root: Path) -> list[list[str]]:
    """Runs the startup data as a host would (`hostsim.run_startup_data`: its `#!` line picks the
    shell, the stub unpacks the script); the calls to `docker`, `systemctl` and `apt-get`."""
    run = await run_startup_data(script, root)
    assert run.code == 0, run.console
    return run.calls


def exec_start(unit: str) -> list[str]:
    return shlex.split(next(line for line in unit.splitlines() if line.startswith("ExecStart="))[10:])


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ControlPlane]:
    async with control_plane(tmp_path_factory.mktemp("join")) as plane:
        yield plane


async def test_without_mtls_the_script_writes_the_bootstrap_and_a_unit_running_the_official_image(
    tmp_path: Path,
) -> None:
    plan = GatewayPlan.of(gateway(), XdsEndpoint("xds.example.com", 50052))
    calls = await run_script(plan.startup_script(HOST_INDEX), tmp_path)
    host = tmp_path / "host"
    bootstrap = json.loads(in_root(host, BOOTSTRAP_PATH).read_text())
    assert bootstrap == plan.bootstrap(HOST_INDEX)
    assert bootstrap["node"]["id"] == f"gateway/{GATEWAY_ID}/{HOST_INDEX}"
    assert "transport_socket" not in bootstrap["static_resources"]["clusters"][0]
    unit = in_root(host, UNIT_PATH).read_text()
    assert " ".join(exec_start(unit)).endswith(" ".join([ENVOY_IMAGE, *envoy_args()]))
    assert "--network host" in " ".join(exec_start(unit))
    assert not in_root(host, JOIN_TOKEN_PATH).exists()
    # Docker pulls Docker Hub images through the mirror first (no anonymous limits there).
    daemon = json.loads(in_root(host, DOCKER_DAEMON_CONFIG).read_text())
    assert daemon == {"registry-mirrors": [DEFAULT_REGISTRY_MIRROR]}
    # Docker is "installed" (the stub), so nothing is installed, and it reads the mirror again; the
    # unit is enabled and started.
    assert calls == [
        ["systemctl", "reload", "docker.service"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "gatehouse-envoy.service"],
    ]


async def test_a_docker_configuration_of_the_image_is_kept_and_the_mirror_can_be_turned_off(
    tmp_path: Path,
) -> None:
    plan = GatewayPlan.of(gateway(), XdsEndpoint("xds.example.com", 50052))
    own = in_root(tmp_path / "host", DOCKER_DAEMON_CONFIG)
    own.parent.mkdir(parents=True)
    own.write_text('{"registry-mirrors": ["https://registry.example.internal"]}')
    calls = await run_script(plan.startup_script(HOST_INDEX), tmp_path)
    assert json.loads(own.read_text()) == {"registry-mirrors": ["https://registry.example.internal"]}
    assert ["systemctl", "reload", "docker.service"] not in calls
    unmirrored = dataclasses.replace(plan, registry_mirror="")
    assert DOCKER_DAEMON_CONFIG not in unpack_startup_script(unmirrored.startup_script(HOST_INDEX))


async def test_the_join_token_becomes_a_client_certificate_and_is_deleted(
    tmp_path: Path, plane: ControlPlane
) -> None:
    calls = await run_script(plan_of(plane).startup_script(HOST_INDEX), tmp_path)
    host = tmp_path / "host"
    assert not in_root(host, JOIN_TOKEN_PATH).exists()
    assert in_root(host, IDENTITY_PATH).read_text().startswith("-----BEGIN CERTIFICATE")
    assert stat.S_IMODE(in_root(host, IDENTITY_PATH).stat().st_mode) == 0o600
    assert certificate_of(host).subject.rfc4514_string() == f"CN={GATEWAY_ID}"
    assert calls[-1] == ["systemctl", "enable", "--now", "gatehouse-envoy.service", "gatehouse-renew.timer"]
    # Envoy sees the certificate's directory, where renewals replace it.
    docker_run = " ".join(exec_start(in_root(host, UNIT_PATH).read_text()))
    assert "--volume /var/lib/gatehouse:/var/lib/gatehouse:ro" in docker_run


async def test_the_bootstrap_the_script_writes_reaches_live_against_the_control_plane(
    tmp_path: Path, plane: ControlPlane
) -> None:
    await run_script(plan_of(plane).startup_script(HOST_INDEX), tmp_path)
    host = tmp_path / "host"
    relocate(host)
    listener_port = publish_listener(plane, GATEWAY_ID, revision=7)
    envoy = HostEnvoy(host, envoy_args(), tmp_path / "envoy.log")
    try:
        await wait_acked(plane, f"gateway/{GATEWAY_ID}/{HOST_INDEX}", 7, envoy)
        async with asyncio.timeout(10):
            await envoy.wait_live()
        assert (await http_get("127.0.0.1", listener_port, "/"))[0] == 404
    finally:
        envoy.stop()


async def test_the_renewal_timer_renews_the_certificate_once_it_is_due(tmp_path: Path) -> None:
    # Certificates of a minute (back-dated five): two thirds of their lifetime are behind them at once.
    short_lived = InternalCA.create(leaf_validity=datetime.timedelta(minutes=1))
    async with control_plane(tmp_path, short_lived) as plane:
        await run_script(plan_of(plane).startup_script(HOST_INDEX), tmp_path)
        host = tmp_path / "host"
        joined = certificate_of(host)
        timer = in_root(host, RENEW_TIMER_PATH).read_text()
        assert "OnUnitActiveSec=1h" in timer and "WantedBy=timers.target" in timer
        renew = exec_start(in_root(host, RENEW_UNIT_PATH).read_text())
        assert renew[2:] == ["renew", plane.join.url]
        code, stderr = await run_on_host(host, renew)
        assert code == 0, stderr
        renewed = certificate_of(host)
        assert renewed.serial_number != joined.serial_number
        assert renewed.subject == joined.subject
        assert renewed.public_key() != joined.public_key()

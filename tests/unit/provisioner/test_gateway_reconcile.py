"""The provisioner's gateway states around a cloud backend: waiting, failing, deleting without leaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gatehouse.v1 import registry_pb2, resources_pb2
from services.provisioner.backends.base import BackendError, HostInfo, NotReady
from services.provisioner.backends.factory import BackendFactory
from services.provisioner.backends.local.gateway import LocalGatewayBackend
from services.provisioner.credentials import AWSBackendConfig, StaticCredentials
from services.provisioner.reconciler import Provisioner, mapped_ports
from services.provisioner.runner import LocalRunner

S = resources_pb2


@dataclass
class RecordingGateways:
    statuses: list[resources_pb2.GatewayStatus] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)

    async def UpdateStatus(self, request: registry_pb2.UpdateGatewayStatusRequest) -> None:
        self.statuses.append(request.status)

    async def FinalizeDelete(self, request: registry_pb2.FinalizeRequest) -> None:
        self.finalized.append(request.id)


@dataclass
class Stubs:
    gateways: RecordingGateways = field(default_factory=RecordingGateways)


@dataclass
class ScriptedBackend:
    """Answers each call with the next scripted outcome."""

    outcomes: list[HostInfo | Exception | None]
    name: str = "aws"

    async def create_or_update(self, gateway: resources_pb2.Gateway) -> HostInfo:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, HostInfo)
        return outcome

    async def delete(self, gateway: resources_pb2.Gateway) -> None:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome


def provisioner(tmp_path: Path, backend: ScriptedBackend | None) -> tuple[Provisioner, Stubs]:
    local = LocalGatewayBackend(tmp_path / "gateways", "127.0.0.1", 1, "127.0.0.1", 8080, 8443)
    configs = {}
    cloud = {}
    if backend is not None:
        configs[("main", "aws")] = AWSBackendConfig(type="aws")
        cloud["aws"] = lambda config: backend
    factory = BackendFactory({"local": local}, StaticCredentials(configs), cloud)  # type: ignore[arg-type]
    stubs = Stubs()
    return Provisioner(stubs, factory, local, LocalRunner(tmp_path / "replicas")), stubs  # type: ignore[arg-type]


def put(p: Provisioner, state: int) -> resources_pb2.Gateway:
    spec = S.GatewaySpec(backend="aws", region="eu-west-1", public_ip=True, replicas=1)
    gw = S.Gateway(id="gw-0123456789ab", project="main", name="edge", spec=spec)
    gw.status.state = state
    p.mirror.gateways[gw.id] = gw
    return gw


async def test_a_booting_host_keeps_the_gateway_provisioning_and_looks_again(tmp_path: Path) -> None:
    p, stubs = provisioner(
        tmp_path, ScriptedBackend([NotReady("waiting for 1 host to start", retry_after=7)])
    )
    put(p, S.GATEWAY_STATE_PROVISIONING)
    result = await p.reconcile_gateway("gw-0123456789ab")
    assert result.requeue_after == 7
    *_, status = stubs.gateways.statuses
    assert stubs.gateways.statuses[0].backend_called  # recorded before the cloud is first asked
    assert (status.state, status.message) == (S.GATEWAY_STATE_PROVISIONING, "waiting for 1 host to start")


async def test_a_running_host_is_written_with_its_address(tmp_path: Path) -> None:
    p, stubs = provisioner(tmp_path, ScriptedBackend([HostInfo(hostname="203.0.113.7")]))
    put(p, S.GATEWAY_STATE_PROVISIONING)
    await p.reconcile_gateway("gw-0123456789ab")
    *_, status = stubs.gateways.statuses
    assert (status.state, status.hostname, status.http_port) == (S.GATEWAY_STATE_RUNNING, "203.0.113.7", 80)
    assert list(status.addresses) == ["203.0.113.7"] and status.backend_called


async def test_missing_credentials_fail_the_gateway_in_one_line(tmp_path: Path) -> None:
    p, stubs = provisioner(tmp_path, None)
    put(p, S.GATEWAY_STATE_SUBMITTED)
    await p.reconcile_gateway("gw-0123456789ab")
    assert stubs.gateways.statuses[-1].state == S.GATEWAY_STATE_FAILED
    assert "aws backend is not configured" in stubs.gateways.statuses[-1].message


async def test_deleting_finalizes_only_once_everything_is_gone(tmp_path: Path) -> None:
    backend = ScriptedBackend([NotReady("deleting: waiting for 2 instances to terminate"), None])
    p, stubs = provisioner(tmp_path, backend)
    put(p, S.GATEWAY_STATE_DELETING)
    result = await p.reconcile_gateway("gw-0123456789ab")
    assert result.requeue_after is not None and stubs.gateways.finalized == []
    assert stubs.gateways.statuses[-1].message == "deleting: waiting for 2 instances to terminate"
    await p.reconcile_gateway("gw-0123456789ab")
    assert stubs.gateways.finalized == ["gw-0123456789ab"]


async def test_a_cloud_refusing_to_delete_keeps_the_gateway_and_says_why(tmp_path: Path) -> None:
    backend = ScriptedBackend(
        [BackendError("aws: AuthFailure: bad key"), BackendError("aws: AuthFailure: bad key")]
    )
    p, stubs = provisioner(tmp_path, backend)
    put(p, S.GATEWAY_STATE_DELETING)
    first = await p.reconcile_gateway("gw-0123456789ab")
    second = await p.reconcile_gateway("gw-0123456789ab")
    assert stubs.gateways.finalized == []
    assert stubs.gateways.statuses[-1].message == "cannot delete the hosts yet: aws: AuthFailure: bad key"
    assert first.requeue_after is not None and second.requeue_after is not None
    assert second.requeue_after > first.requeue_after


async def test_a_gateway_of_a_backend_no_longer_configured_is_let_go(tmp_path: Path) -> None:
    p, stubs = provisioner(tmp_path, None)
    put(p, S.GATEWAY_STATE_DELETING)
    await p.reconcile_gateway("gw-0123456789ab")
    assert stubs.gateways.finalized == ["gw-0123456789ab"]


@pytest.mark.parametrize("port", [0, 5001])
def test_mapped_ports_are_the_ports_services_map_on_the_gateway(tmp_path: Path, port: int) -> None:
    p, _ = provisioner(tmp_path, None)
    spec = S.ServiceSpec(gateway_id="gw-0123456789ab", gateway_port=port, app_port=8000)
    p.mirror.services["svc-1"] = S.Service(id="svc-1", spec=spec)
    other = S.ServiceSpec(gateway_id="gw-other", gateway_port=6000)
    p.mirror.services["svc-2"] = S.Service(id="svc-2", spec=other)
    assert mapped_ports(p.mirror, "gw-0123456789ab") == (frozenset({port}) if port else frozenset())

"""The provisioner's gateway states around a cloud backend: waiting, failing, deleting without leaks,
and running only once every host's Envoy serves."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import registry_pb2, resources_pb2
from services.provisioner.backends.base import BackendError, GatewayBackend, GatewayHost, HostInfo, NotReady
from services.provisioner.backends.factory import BackendFactory, CloudBuilder
from services.provisioner.backends.local.gateway import LocalGatewayBackend
from services.provisioner.credentials import AWSBackendConfig, BackendConfig
from services.provisioner.reconciler import (
    HOST_CONNECT_DEADLINE_SECONDS,
    Provisioner,
    host_ports,
    mapped_ports,
)
from services.provisioner.runner import LocalRunner
from tests.support.static_credentials import StaticCredentials

S = resources_pb2
GATEWAY_ID = "gw-0123456789ab"


@dataclass
class RecordingGateways:
    """The registry's gateway calls: status writes land on the gateway (the provisioner's mirror sees
    them at once, as if from the watch), and its Envoys are as gateway_xds last reported them."""

    gateway: resources_pb2.Gateway | None = None
    statuses: list[resources_pb2.GatewayStatus] = field(default_factory=list)
    finalized: list[str] = field(default_factory=list)
    envoys: dict[int, resources_pb2.EnvoyStatus] = field(default_factory=dict)

    async def UpdateStatus(self, request: registry_pb2.UpdateGatewayStatusRequest) -> None:
        self.statuses.append(request.status)
        if self.gateway is not None:
            self.gateway.status.CopyFrom(request.status)
            self.gateway.resource_version += 1

    async def FinalizeDelete(self, request: registry_pb2.FinalizeRequest) -> None:
        self.finalized.append(request.id)

    async def Get(self, request: registry_pb2.GetRequest) -> resources_pb2.Gateway:
        assert self.gateway is not None
        current = resources_pb2.Gateway()
        current.CopyFrom(self.gateway)
        current.status.envoys.extend(self.envoys[index] for index in sorted(self.envoys))
        return current

    def envoy(self, index: int, connected: bool = True, acked: int | None = None, rejected: str = "") -> None:
        """Host `index`'s Envoy as gateway_xds reports it; `acked` None: the current revision."""
        assert self.gateway is not None
        revision = self.gateway.resource_version if acked is None else acked
        self.envoys[index] = resources_pb2.EnvoyStatus(
            node_id=f"gateway/{GATEWAY_ID}/{index}",
            connected=connected,
            acked_revision=revision,
            rejected=rejected,
        )


class NotCalled:
    """The registry calls these tests never make."""

    def Snapshot(self, request: registry_pb2.SnapshotRequest) -> NoReturn:
        raise AssertionError("not called")

    def Watch(self, request: registry_pb2.WatchRequest) -> NoReturn:
        raise AssertionError("not called")

    def UpdateStatus(self, request: registry_pb2.UpdateServiceStatusRequest) -> NoReturn:
        raise AssertionError("not called")

    def Register(self, request: registry_pb2.RegisterReplicaRequest) -> NoReturn:
        raise AssertionError("not called")

    def Unregister(self, request: registry_pb2.UnregisterReplicaRequest) -> NoReturn:
        raise AssertionError("not called")

    def SetProbed(self, request: registry_pb2.SetProbedRequest) -> NoReturn:
        raise AssertionError("not called")

    def ResolveRun(self, request: registry_pb2.ResolveRunRequest) -> NoReturn:
        raise AssertionError("not called")


@dataclass
class Stubs:
    gateways: RecordingGateways = field(default_factory=RecordingGateways)
    watch: NotCalled = field(default_factory=NotCalled)
    services: NotCalled = field(default_factory=NotCalled)
    replicas: NotCalled = field(default_factory=NotCalled)
    secrets: NotCalled = field(default_factory=NotCalled)


@dataclass
class ScriptedBackend:
    """Answers each call with the next scripted outcome."""

    outcomes: list[HostInfo | Exception | None]
    name: str = "aws"

    async def create_or_update(
        self, gateway: resources_pb2.Gateway, serving: Collection[str] | None = None
    ) -> HostInfo:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, HostInfo)
        return outcome

    async def delete(self, gateway: resources_pb2.Gateway) -> None:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome


def provisioner(
    tmp_path: Path, backend: GatewayBackend | None, clock: Clock | None = None
) -> tuple[Provisioner, Stubs]:
    local = LocalGatewayBackend(tmp_path / "gateways", "127.0.0.1", 1, "127.0.0.1", 8080, 8443)
    configs: dict[tuple[str, str], BackendConfig] = {}
    cloud: dict[str, CloudBuilder] = {}
    if backend is not None:
        configs[("main", "aws")] = AWSBackendConfig(type="aws")
        cloud["aws"] = lambda config: backend
    factory = BackendFactory({"local": local}, StaticCredentials(configs), cloud)
    stubs = Stubs()
    runner = LocalRunner(tmp_path / "replicas")
    p = Provisioner(stubs, factory, local, runner, clock=clock or Clock())
    return p, stubs


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def put(
    p: Provisioner, state: resources_pb2.GatewayState, replicas: int = 1, stubs: Stubs | None = None
) -> resources_pb2.Gateway:
    spec = S.GatewaySpec(backend="aws", region="eu-west-1", public_ip=True, replicas=replicas)
    gw = S.Gateway(id=GATEWAY_ID, project="main", name="edge", spec=spec, resource_version=10)
    gw.status.state = state
    p.mirror.gateways[gw.id] = gw
    if stubs is not None:
        stubs.gateways.gateway = gw
    return gw


async def test_a_booting_host_keeps_the_gateway_provisioning_and_looks_again(tmp_path: Path) -> None:
    p, stubs = provisioner(
        tmp_path, ScriptedBackend([NotReady("waiting for 1 host to start", retry_after=7)])
    )
    put(p, S.GATEWAY_STATE_PROVISIONING, stubs=stubs)
    result = await p.reconcile_gateway("gw-0123456789ab")
    assert result.requeue_after == 7
    *_, status = stubs.gateways.statuses
    assert stubs.gateways.statuses[0].backend_called  # recorded before the cloud is first asked
    assert (status.state, status.message) == (S.GATEWAY_STATE_PROVISIONING, "waiting for 1 host to start")


async def test_a_host_the_cloud_runs_is_written_with_its_address_and_awaited_until_its_envoy_acks(
    tmp_path: Path,
) -> None:
    host = HostInfo(hostname="203.0.113.7", hosts=(GatewayHost(0, "i-1"),))
    p, stubs = provisioner(tmp_path, ScriptedBackend([host] * 4))
    put(p, S.GATEWAY_STATE_PROVISIONING, stubs=stubs)
    result = await p.reconcile_gateway(GATEWAY_ID)
    status = stubs.gateways.statuses[-1]
    # The address is written at once (gateway_xds builds the listeners from it), running is not.
    assert (status.state, status.hostname, status.http_port) == (
        S.GATEWAY_STATE_PROVISIONING,
        "203.0.113.7",
        80,
    )
    assert list(status.addresses) == ["203.0.113.7"] and status.backend_called
    assert status.message == "waiting for Envoy on host 0 to connect"
    assert result.requeue_after is not None and result.requeue_after <= 5
    # Connected, but it has not acknowledged the configuration with the address yet.
    assert stubs.gateways.gateway is not None
    stubs.gateways.envoy(0, acked=stubs.gateways.gateway.resource_version - 1)
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.statuses[-1].state == S.GATEWAY_STATE_PROVISIONING
    assert (
        stubs.gateways.statuses[-1].message == "waiting for Envoy on host 0 to acknowledge its configuration"
    )
    stubs.gateways.envoy(0)
    result = await p.reconcile_gateway(GATEWAY_ID)
    assert (stubs.gateways.statuses[-1].state, stubs.gateways.statuses[-1].message) == (
        S.GATEWAY_STATE_RUNNING,
        "",
    )
    assert result.requeue_after == 30
    # A control plane outage later does not make it provisioning again.
    stubs.gateways.envoy(0, connected=False)
    written = len(stubs.gateways.statuses)
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.gateway is not None
    assert stubs.gateways.gateway.status.state == S.GATEWAY_STATE_RUNNING
    assert len(stubs.gateways.statuses) == written


async def test_a_gateway_of_several_hosts_runs_once_each_hosts_envoy_serves(tmp_path: Path) -> None:
    hosts = tuple(GatewayHost(index, f"i-{index}") for index in range(3))
    p, stubs = provisioner(tmp_path, ScriptedBackend([HostInfo(hostname="lb", hosts=hosts)] * 4))
    put(p, S.GATEWAY_STATE_PROVISIONING, replicas=3, stubs=stubs)
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.statuses[-1].message == "waiting for Envoy on hosts 0, 1, 2 to connect"
    stubs.gateways.envoy(0)
    stubs.gateways.envoy(2, acked=1, rejected="config rejected: cannot bind 0.0.0.0:80")
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.statuses[-1].message == (
        "waiting for Envoy on host 1 to connect; waiting for Envoy on host 2 to acknowledge its "
        "configuration (config rejected: cannot bind 0.0.0.0:80)"
    )
    stubs.gateways.envoy(1)
    stubs.gateways.envoy(2)
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.statuses[-1].state == S.GATEWAY_STATE_RUNNING


@dataclass
class ReplacingBackend:
    """A cloud whose hosts never connect their Envoy unless told to: each host is replaced when asked."""

    launched: list[float] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    output: str = "cloud-init: join.sh: /v1/join: no answer from xds:50055\nFailed to start gatehouse"
    clock: Clock = field(default_factory=Clock)
    name: str = "aws"
    calls: int = 0

    async def create_or_update(
        self, gateway: resources_pb2.Gateway, serving: Collection[str] | None = None
    ) -> HostInfo:
        self.calls += 1
        if len(self.launched) == len(self.replaced):
            self.launched.append(self.clock.now)  # a new host for the slot
        host = GatewayHost(0, f"i-{len(self.launched)}", self.launched[-1])
        return HostInfo(hostname="203.0.113.7", hosts=(host,))

    async def host_output(self, gateway: resources_pb2.Gateway, host: GatewayHost) -> str | None:
        return self.output

    async def replace_host(self, gateway: resources_pb2.Gateway, host: GatewayHost) -> None:
        self.replaced.append(host.id)

    async def delete(self, gateway: resources_pb2.Gateway) -> None:
        pass


async def test_a_host_whose_envoy_never_connects_is_shown_with_its_console_replaced_and_backed_off(
    tmp_path: Path,
) -> None:
    clock = Clock()
    backend = ReplacingBackend(clock=clock)
    p, stubs = provisioner(tmp_path, backend, clock)
    put(p, S.GATEWAY_STATE_PROVISIONING, stubs=stubs)
    await p.reconcile_gateway(GATEWAY_ID)
    clock.now += HOST_CONNECT_DEADLINE_SECONDS - 1
    await p.reconcile_gateway(GATEWAY_ID)
    assert backend.replaced == [] and stubs.gateways.statuses[-1].message.startswith("waiting for Envoy")

    clock.now += 2
    result = await p.reconcile_gateway(GATEWAY_ID)
    assert backend.replaced == ["i-1"]
    status = stubs.gateways.statuses[-1]
    assert status.state == S.GATEWAY_STATE_PROVISIONING
    assert status.message == (
        "host 0's Envoy did not connect within 600s: cloud-init: join.sh: /v1/join: no answer from "
        "xds:50055 | Failed to start gatehouse; replaced, a new host in 10s"
    )
    assert result.requeue_after == 10
    # No new host during the back-off, whatever wakes the gateway.
    calls = backend.calls
    clock.now += 5
    assert (await p.reconcile_gateway(GATEWAY_ID)).requeue_after == 5
    assert backend.calls == calls
    clock.now += 5
    await p.reconcile_gateway(GATEWAY_ID)
    assert backend.calls == calls + 1 and len(backend.launched) == 2
    assert stubs.gateways.statuses[-1].message.startswith(
        "waiting for Envoy on host 0 to connect (replaced 1 host: host 0's Envoy did not connect"
    )
    # The new host fails too: the back-off doubles.
    clock.now += HOST_CONNECT_DEADLINE_SECONDS + 1
    result = await p.reconcile_gateway(GATEWAY_ID)
    assert backend.replaced == ["i-1", "i-2"] and result.requeue_after == 20
    clock.now += 20
    await p.reconcile_gateway(GATEWAY_ID)
    # The third serves: running, and what was replaced is no longer shown.
    stubs.gateways.envoy(0)
    await p.reconcile_gateway(GATEWAY_ID)
    assert (stubs.gateways.statuses[-1].state, stubs.gateways.statuses[-1].message) == (
        S.GATEWAY_STATE_RUNNING,
        "",
    )
    assert stubs.gateways.gateway is not None
    assert all(s.state != S.GATEWAY_STATE_RUNNING for s in stubs.gateways.statuses[:-1])


async def test_a_gateway_running_before_a_restart_stays_running_with_its_envoys_away(tmp_path: Path) -> None:
    host = HostInfo(hostname="203.0.113.7", hosts=(GatewayHost(0, "i-1"),))
    p, stubs = provisioner(tmp_path, ScriptedBackend([host]))
    gw = put(p, S.GATEWAY_STATE_RUNNING, stubs=stubs)
    gw.status.hostname = "203.0.113.7"
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.gateway is not None
    assert stubs.gateways.gateway.status.state == S.GATEWAY_STATE_RUNNING


async def test_a_new_host_in_a_slot_counts_once_the_old_hosts_envoy_was_seen_gone(tmp_path: Path) -> None:
    first = HostInfo(hostname="203.0.113.7", hosts=(GatewayHost(0, "i-1"),))
    second = HostInfo(hostname="203.0.113.7", hosts=(GatewayHost(0, "i-2"),))
    p, stubs = provisioner(tmp_path, ScriptedBackend([first, second, second, second]))
    put(p, S.GATEWAY_STATE_PROVISIONING, stubs=stubs)
    stubs.gateways.envoy(0, acked=100)
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.statuses[-1].state == S.GATEWAY_STATE_RUNNING
    # i-1 is replaced by i-2 (a new size): node 0 still reports i-1's Envoy, connected.
    stubs.gateways.envoy(0, acked=100)
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.statuses[-1].message == "waiting for Envoy on host 0 to connect"
    stubs.gateways.envoy(0, connected=False)
    await p.reconcile_gateway(GATEWAY_ID)
    stubs.gateways.envoy(0, acked=100)
    await p.reconcile_gateway(GATEWAY_ID)
    assert stubs.gateways.statuses[-1].state == S.GATEWAY_STATE_RUNNING


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


async def test_a_replacement_under_the_same_name_gets_a_deadline_of_its_own(tmp_path: Path) -> None:
    # A Kubernetes host is a Deployment named after its slot: its replacement has the same id, and
    # no launch time is known, so the provisioner counts from when it saw each.
    clock = Clock()
    host = HostInfo(hostname="lb", hosts=(GatewayHost(0, "envoy-0"),))
    backend = ReplacingBackend(clock=clock)
    backend.create_or_update = ScriptedBackend([host] * 10).create_or_update  # type: ignore[method-assign]
    p, stubs = provisioner(tmp_path, backend, clock)
    put(p, S.GATEWAY_STATE_PROVISIONING, stubs=stubs)
    await p.reconcile_gateway(GATEWAY_ID)
    clock.now += HOST_CONNECT_DEADLINE_SECONDS + 1
    await p.reconcile_gateway(GATEWAY_ID)
    assert backend.replaced == ["envoy-0"]
    clock.now += 10
    await p.reconcile_gateway(GATEWAY_ID)
    clock.now += 10
    await p.reconcile_gateway(GATEWAY_ID)
    assert backend.replaced == ["envoy-0"]
    assert stubs.gateways.statuses[-1].message.startswith("waiting for Envoy on host 0 to connect")


def test_cloud_hosts_open_the_mapped_ports_and_the_agent_tunnel_port() -> None:
    mirror = RegistryMirror()
    for service_id, gateway_id, port in (("s1", "gw-1", 5001), ("s2", "gw-1", 0), ("s3", "gw-2", 6001)):
        mirror.services[service_id] = resources_pb2.Service(
            id=service_id, spec=resources_pb2.ServiceSpec(gateway_id=gateway_id, gateway_port=port)
        )
    assert host_ports(mirror, "gw-1", 8444) == {5001, 8444}
    assert host_ports(mirror, "gw-3", 8444) == {8444}

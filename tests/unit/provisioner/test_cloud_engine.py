"""The reconcile algorithm every cloud backend shares, over an in-memory driver."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import pytest

from gatehouse.v1 import resources_pb2
from services.provisioner.backends.base import BackendError, HostInfo, NotReady
from services.provisioner.backends.cloud import CloudGatewayBackend, CloudHost
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint


class CloudSaysNo(Exception):
    pass


@dataclass
class MemoryDriver:
    """A cloud in a dict: hosts boot after `boot_passes` listings; deletions are immediate."""

    boot_passes: int = 0
    hosts_by_id: dict[str, CloudHost] = field(default_factory=dict)
    listings: dict[str, int] = field(default_factory=dict)
    created: list[tuple[int, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    fail_with: Exception | None = None

    def translate(self, error: Exception) -> Exception:
        return BackendError(f"memory: {error}") if isinstance(error, CloudSaysNo) else error

    def instance_type(self, plan: GatewayPlan) -> str:
        return plan.instance_type or "small"

    def prepare(self, plan: GatewayPlan) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        for host_id, host in self.hosts_by_id.items():
            self.listings[host_id] = self.listings.get(host_id, 0) + 1
            if not host.running and not host.failed and self.listings[host_id] > self.boot_passes:
                self.hosts_by_id[host_id] = replace(host, running=True)
        return list(self.hosts_by_id.values())

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        host_id = f"h{next(self.ids)}"
        self.hosts_by_id[host_id] = CloudHost(
            index, host_id, fingerprint, running=False, public_address=host_id
        )
        self.created.append((index, host_id))

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        del self.hosts_by_id[host.id]
        self.deleted.append(host.id)

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        return HostInfo(hostname=",".join(host.public_address or "" for host in hosts))

    def delete_all(self, plan: GatewayPlan) -> list[str]:
        self.hosts_by_id.clear()
        return []


def gateway(replicas: int = 1, instance_type: str = "") -> resources_pb2.Gateway:
    spec = resources_pb2.GatewaySpec(
        backend="memory", region="r", public_ip=True, replicas=replicas, instance_type=instance_type
    )
    return resources_pb2.Gateway(id="gw-0123456789ab", project="main", name="edge", spec=spec)


def backend(driver: MemoryDriver) -> CloudGatewayBackend:
    return CloudGatewayBackend("memory", driver, XdsEndpoint("xds", 1))


async def test_missing_hosts_are_created_and_waited_for_then_exposed() -> None:
    driver = MemoryDriver(boot_passes=2)
    with pytest.raises(NotReady, match="waiting for 2 hosts to start"):
        await backend(driver).create_or_update(gateway(replicas=2))
    assert [index for index, _ in driver.created] == [0, 1]
    with pytest.raises(NotReady):
        await backend(driver).create_or_update(gateway(replicas=2))
    host = await backend(driver).create_or_update(gateway(replicas=2))
    assert host.hostname == "h0,h1"
    assert len(driver.created) == 2


async def test_surplus_duplicate_and_failed_hosts_are_deleted() -> None:
    driver = MemoryDriver()
    fingerprint = backend(driver).plan(gateway()).host_fingerprint("small")
    driver.hosts_by_id = {
        "a": CloudHost(0, "a", fingerprint, running=True),
        "b": CloudHost(0, "b", fingerprint, running=True),  # a duplicate of slot 0
        "c": CloudHost(1, "c", fingerprint, running=True),  # beyond replicas
        "d": CloudHost(2, "d", fingerprint, running=False, failed=True),
    }
    await backend(driver).create_or_update(gateway(replicas=1))
    assert sorted(driver.deleted) == ["b", "c", "d"]
    assert list(driver.hosts_by_id) == ["a"]


async def test_a_stale_host_is_replaced_one_at_a_time() -> None:
    driver = MemoryDriver(boot_passes=1)
    await _settle(driver, gateway(replicas=3))
    driver.created.clear()
    running_per_pass = []
    for _ in range(20):
        running_per_pass.append(sum(host.running for host in driver.hosts_by_id.values()))
        try:
            await backend(driver).create_or_update(gateway(replicas=3, instance_type="large"))
            break
        except NotReady:
            pass
    assert len(driver.created) == 3
    assert min(running_per_pass) >= 2


async def test_cloud_errors_are_translated_and_others_left_for_the_retry() -> None:
    driver = MemoryDriver(fail_with=CloudSaysNo("quota exceeded"))
    with pytest.raises(BackendError, match=r"^memory: quota exceeded$"):
        await backend(driver).create_or_update(gateway())
    driver.fail_with = ConnectionError("reset")
    with pytest.raises(ConnectionError):
        await backend(driver).create_or_update(gateway())


async def _settle(driver: MemoryDriver, gw: resources_pb2.Gateway) -> HostInfo:
    for _ in range(20):
        try:
            return await backend(driver).create_or_update(gw)
        except NotReady:
            pass
    raise AssertionError("never settled")


async def test_with_the_envoys_view_a_rolling_replacement_waits_for_each_new_host_to_serve() -> None:
    driver = MemoryDriver()
    await _settle(driver, gateway(replicas=2))
    serving = set(driver.hosts_by_id)
    larger = gateway(replicas=2, instance_type="large")
    info = await backend(driver).create_or_update(larger, serving=serving)
    # One old host went; its replacement runs, but its Envoy has not served yet: the other old one
    # stays, however often it is asked.
    assert info.pending == "replacing 1 host" and len(driver.deleted) == 1
    [new] = [host for host in info.hosts if host.id not in serving]
    info = await backend(driver).create_or_update(larger, serving=serving)
    assert info.pending == "replacing 1 host" and len(driver.deleted) == 1
    serving.add(new.id)
    info = await backend(driver).create_or_update(larger, serving=serving)
    assert info.pending == "" and len(driver.deleted) == 2
    assert [host.index for host in info.hosts] == [0, 1]


@dataclass
class ConsoleDriver(MemoryDriver):
    def console_output(self, plan: GatewayPlan, host: CloudHost) -> str | None:
        return f"console of {host.id}"


async def test_a_host_is_replaced_by_its_id_and_its_console_read_where_the_driver_offers_one() -> None:
    driver = ConsoleDriver()
    info = await _settle(driver, gateway())
    [host] = info.hosts
    assert await backend(driver).host_output(gateway(), host) == f"console of {host.id}"
    assert await backend(MemoryDriver()).host_output(gateway(), host) is None
    await backend(driver).replace_host(gateway(), host)
    assert driver.deleted == [host.id]
    again = await _settle(driver, gateway())
    assert [h.id for h in again.hosts] != [host.id]

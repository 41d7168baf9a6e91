"""The gcp backend: the real google-cloud-compute client against a wire-level fake of Compute Engine."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from services.provisioner.backends.base import BackendError
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.backends.gcp.driver import GcpDriver
from services.provisioner.credentials import GCPBackendConfig
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from tests.fakes.gcp_compute import FakeCompute
from tests.integration.provisioner.harness import converge, delete_fully, gateway

REGION = "europe-west4"
GATEWAY_ID = "gw-0123456789ab"
XDS = XdsEndpoint("xds.gatehouse.example", 50052)


@pytest.fixture
def compute() -> Iterator[FakeCompute]:
    with FakeCompute().serve() as fake:
        yield fake


def backend(compute: FakeCompute, ports: frozenset[int] = frozenset(), **creds: Any) -> CloudGatewayBackend:
    info = compute.credentials_info(**creds)
    config = GCPBackendConfig.model_validate(
        {
            "type": "gcp",
            "project_id": compute.project,
            "creds": {"type": "service_account", "data": json.dumps(info)},
            "endpoint_url": compute.url,
        }
    )
    return CloudGatewayBackend("gcp", GcpDriver(config), XDS, lambda _: ports)


def metadata(instance: dict[str, Any]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in instance["metadata"]["items"]}


async def test_a_public_gateway_is_a_small_ubuntu_instance_with_a_static_address_and_a_firewall_rule(
    compute: FakeCompute,
) -> None:
    gw = gateway("gcp", REGION, GATEWAY_ID, domain="example.com")
    host = await converge(backend(compute), gw)

    [(zone, name)] = list(compute.instances)
    instance = compute.instances[(zone, name)]
    assert (zone, name) == (f"{REGION}-a", f"gatehouse-{GATEWAY_ID}-0")
    assert instance["machineType"].endswith("/machineTypes/e2-small")
    assert compute.disks[(zone, name)]["sourceImage"].endswith("/ubuntu-2404-noble-amd64-v20250115")
    assert (
        instance["labels"]["gatehouse-gateway"] == GATEWAY_ID and instance["labels"]["gatehouse-host"] == "0"
    )
    assert instance["tags"]["items"] == [f"gatehouse-{GATEWAY_ID}"]
    assert metadata(instance)["startup-script"] == GatewayPlan.of(gw, XDS).startup_script(0)
    assert instance.get("serviceAccounts", []) == []
    [address] = compute.addresses.values()
    assert address["status"] == "IN_USE" and host.hostname == address["address"]
    assert instance["networkInterfaces"][0]["accessConfigs"][0]["natIP"] == address["address"]
    rule = compute.firewalls[f"gatehouse-{GATEWAY_ID}"]
    assert rule["targetTags"] == [f"gatehouse-{GATEWAY_ID}"] and rule["sourceRanges"] == ["0.0.0.0/0"]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["80", "443"]}]
    # Operations are polled on the fake, with the operations clients pointed at it.
    assert any(path.endswith("/wait") for _, path in compute.router.requests)

    before = compute.inventory()
    assert await converge(backend(compute), gw) == host
    assert compute.inventory() == before


async def test_a_private_gateway_has_no_external_address(compute: FakeCompute) -> None:
    gw = gateway("gcp", REGION, GATEWAY_ID, public_ip=False)
    host = await converge(backend(compute), gw)
    [instance] = compute.instances.values()
    assert "accessConfigs" not in instance["networkInterfaces"][0]
    assert compute.addresses == {}
    assert host.hostname == instance["networkInterfaces"][0]["networkIP"]


async def test_replicas_spread_over_zones_and_scaling_down_releases_their_addresses(
    compute: FakeCompute,
) -> None:
    gw = gateway("gcp", REGION, GATEWAY_ID, replicas=3)
    await converge(backend(compute), gw)
    assert sorted(compute.instances) == [
        (f"{REGION}-{z}", f"gatehouse-{GATEWAY_ID}-{i}") for i, z in enumerate("abc")
    ]
    assert len(compute.addresses) == 3
    gw.spec.replicas = 1
    await converge(backend(compute), gw)
    assert list(compute.instances) == [(f"{REGION}-a", f"gatehouse-{GATEWAY_ID}-0")]
    assert [name for _, name in compute.addresses] == [f"gatehouse-{GATEWAY_ID}-0"]


async def test_delete_leaves_nothing_behind(compute: FakeCompute) -> None:
    gw = gateway("gcp", REGION, GATEWAY_ID, replicas=2)
    await converge(backend(compute, frozenset({5001})), gw)
    await delete_fully(backend(compute), gw)
    assert compute.inventory() == {"instances": set(), "disks": set(), "addresses": set(), "firewalls": set()}
    await delete_fully(backend(compute), gw)


async def test_mapped_ports_are_opened_on_the_firewall_rule(compute: FakeCompute) -> None:
    gw = gateway("gcp", REGION, GATEWAY_ID)
    await converge(backend(compute, frozenset({5001})), gw)
    assert compute.firewalls[f"gatehouse-{GATEWAY_ID}"]["allowed"][0]["ports"] == ["80", "443", "5001"]
    await converge(backend(compute), gw)
    assert compute.firewalls[f"gatehouse-{GATEWAY_ID}"]["allowed"][0]["ports"] == ["80", "443"]


async def test_a_crash_after_the_insert_and_a_restart_leave_one_instance(compute: FakeCompute) -> None:
    gw = gateway("gcp", REGION, GATEWAY_ID)
    crashed = backend(compute)
    plan = crashed.plan(gw)
    crashed.driver.prepare(plan)
    instance_type = crashed.driver.instance_type(plan)
    crashed.driver.create_host(plan, 0, instance_type, plan.host_fingerprint(instance_type))
    [created] = compute.instances.values()
    # The restarted process finds the instance by its labels; a lost insert answer would get a 409.
    await converge(backend(compute), gw)
    assert list(compute.instances.values()) == [created]


async def test_an_arm_machine_type_gets_the_arm_image(compute: FakeCompute) -> None:
    await converge(backend(compute), gateway("gcp", REGION, GATEWAY_ID, instance_type="t2a-standard-1"))
    [disk] = compute.disks.values()
    assert disk["sourceImage"].endswith("/ubuntu-2404-noble-arm64-v20250115")


async def test_quota_unknown_types_and_regions_fail_in_one_line_with_the_clouds_words(
    compute: FakeCompute,
) -> None:
    compute.instance_quota = 0
    with pytest.raises(BackendError) as quota:
        await converge(backend(compute), gateway("gcp", REGION, GATEWAY_ID))
    assert (
        str(quota.value)
        == "gcp: QUOTA_EXCEEDED: Quota 'INSTANCES' exceeded. Limit: 0.0 in region europe-west4."
    )
    with pytest.raises(BackendError, match=r"^gcp: machine type n9-huge does not exist in europe-west4-a$"):
        await converge(backend(compute), gateway("gcp", REGION, GATEWAY_ID, instance_type="n9-huge"))
    with pytest.raises(
        BackendError, match=r"^gcp: region mars-central1 not found in project gatehouse-test$"
    ):
        await converge(backend(compute), gateway("gcp", "mars-central1", GATEWAY_ID))


async def test_wrong_credentials_fail_the_gateway_with_the_clouds_message(compute: FakeCompute) -> None:
    wrong = backend(compute, key=rsa.generate_private_key(65537, 2048))
    with pytest.raises(BackendError) as failure:
        await converge(wrong, gateway("gcp", REGION, GATEWAY_ID))
    assert str(failure.value).startswith("gcp: Request had invalid authentication credentials.")
    assert "\n" not in str(failure.value)

"""The gcp backend: the real google-cloud-compute client against a wire-level fake of Compute Engine."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from services.provisioner.backends.base import BackendError
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.backends.gcp.driver import GcpDriver
from services.provisioner.credentials import GCPBackendConfig
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from tests.fakes.gcp_compute import FakeCompute
from tests.integration.provisioner.harness import converge, delete_fully, gateway
from tests.integration.provisioner.overdue import never_connecting

REGION = "europe-west4"
GATEWAY_ID = "gw-0123456789ab"
XDS = XdsEndpoint("xds.gatehouse.example", 50052)


@pytest.fixture
def compute() -> Iterator[FakeCompute]:
    with FakeCompute().serve() as fake:
        yield fake


def backend(
    compute: FakeCompute,
    ports: frozenset[int] = frozenset(),
    network: dict[str, Any] | None = None,
    **creds: Any,
) -> CloudGatewayBackend:
    info = compute.credentials_info(**creds)
    config = GCPBackendConfig.model_validate(
        {
            "type": "gcp",
            "project_id": compute.project,
            "creds": {"type": "service_account", "data": json.dumps(info)},
            "endpoint_url": compute.url,
            **(network or {}),
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
    with pytest.raises(
        BackendError, match=r"^gcp: machine type n9-huge is not offered in any zone of europe-west4$"
    ):
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


async def test_a_custom_mode_network_needs_a_configured_subnetwork_which_hosts_get(
    compute: FakeCompute,
) -> None:
    compute.add_network("edge", subnets={REGION: "edge-eu", "us-central1": "edge-us"})
    gw = gateway("gcp", REGION, GATEWAY_ID, replicas=2)
    with pytest.raises(BackendError) as failure:
        await converge(backend(compute, network={"vpc_name": "edge"}), gw)
    assert str(failure.value) == (
        "gcp: network edge is a custom-mode VPC: hosts need a subnetwork; "
        "set subnetworks: {europe-west4: <subnetwork>} in the project's gcp backend"
    )
    assert compute.inventory() == {"instances": set(), "disks": set(), "addresses": set(), "firewalls": set()}

    wrong = {"vpc_name": "edge", "subnetworks": {REGION: "edge-us"}}
    with pytest.raises(BackendError, match=r"^gcp: subnetwork edge-us not found in europe-west4$"):
        await converge(backend(compute, network=wrong), gw)

    configured = {"vpc_name": "edge", "subnetworks": {REGION: "edge-eu"}}
    await converge(backend(compute, network=configured), gw)
    for instance in compute.instances.values():
        [interface] = instance["networkInterfaces"]
        assert interface["network"].endswith("/global/networks/edge")
        assert interface["subnetwork"].endswith(f"/regions/{REGION}/subnetworks/edge-eu")
    assert compute.firewalls[f"gatehouse-{GATEWAY_ID}"]["network"].endswith("/global/networks/edge")
    # The auto-mode default network needs none (the instance gets the region's own subnetwork).
    await converge(backend(compute), gateway("gcp", REGION, "gw-000000000002"))
    [auto] = [i for (_, name), i in compute.instances.items() if "gw-000000000002" in name]
    assert "subnetwork" not in auto["networkInterfaces"][0]


async def test_static_addresses_carry_the_gateways_labels_and_go_with_it(compute: FakeCompute) -> None:
    gw = gateway("gcp", REGION, GATEWAY_ID, replicas=2)
    await converge(backend(compute), gw)
    for index in range(2):
        address = compute.addresses[(REGION, f"gatehouse-{GATEWAY_ID}-{index}")]
        assert address["labels"]["gatehouse-gateway"] == GATEWAY_ID
        assert address["labels"]["gatehouse-host"] == str(index)
    # An address left unlabelled (made before labels were set, or a crash before setLabels) goes too.
    compute.addresses[(REGION, f"gatehouse-{GATEWAY_ID}-1")]["labels"] = {}
    await delete_fully(backend(compute), gw)
    assert compute.addresses == {}


async def test_the_boot_disk_type_is_one_the_machine_series_takes(compute: FakeCompute) -> None:
    await converge(backend(compute), gateway("gcp", REGION, GATEWAY_ID))
    [disk] = compute.disks.values()
    assert disk["type"].endswith(f"/zones/{REGION}-a/diskTypes/pd-balanced")
    await delete_fully(backend(compute), gateway("gcp", REGION, GATEWAY_ID))

    # N4 takes Hyperdisk only; C3 refuses pd-standard, the API's default when no type is given.
    for machine_type, disk_type in (
        ("n4-standard-2", "hyperdisk-balanced"),
        ("c3-standard-4", "pd-balanced"),
    ):
        gw = gateway("gcp", REGION, GATEWAY_ID, instance_type=machine_type)
        await converge(backend(compute), gw)
        [disk] = compute.disks.values()
        assert disk["type"].endswith(f"/diskTypes/{disk_type}"), machine_type
        await delete_fully(backend(compute), gw)


async def test_hosts_spread_only_over_zones_that_offer_the_machine_type(compute: FakeCompute) -> None:
    compute.not_offered.add(("n2-standard-4", f"{REGION}-b"))
    gw = gateway("gcp", REGION, GATEWAY_ID, replicas=3, instance_type="n2-standard-4")
    await converge(backend(compute), gw)
    assert sorted(compute.instances) == [
        (f"{REGION}-a", f"gatehouse-{GATEWAY_ID}-0"),
        (f"{REGION}-a", f"gatehouse-{GATEWAY_ID}-2"),
        (f"{REGION}-c", f"gatehouse-{GATEWAY_ID}-1"),
    ]
    compute.not_offered |= {("e2-medium", f"{REGION}-{zone}") for zone in "abc"}
    with pytest.raises(
        BackendError, match=r"^gcp: machine type e2-medium is not offered in any zone of europe-west4$"
    ):
        await converge(backend(compute), gateway("gcp", REGION, "gw-000000000002", instance_type="e2-medium"))


async def test_operations_take_several_polls_and_one_ending_in_error_is_reported_or_retried(
    compute: FakeCompute,
) -> None:
    compute.operation_polls = 3
    gw = gateway("gcp", REGION, GATEWAY_ID)
    compute.fail_next("insert", "INTERNAL_ERROR", "Internal error. Please try again.")
    # A transient failure is raised as it is (the reconciler retries it); the next pass succeeds.
    with pytest.raises(Exception, match="INTERNAL_ERROR"):
        await backend(compute).create_or_update(gw)
    await converge(backend(compute), gw)
    assert len(compute.instances) == 1

    compute.fail_next(
        "insert",
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "The zone 'projects/gatehouse-test/zones/europe-west4-a' does not have enough resources available "
        "to fulfill the request.",
    )
    with pytest.raises(BackendError, match=r"^gcp: ZONE_RESOURCE_POOL_EXHAUSTED: The zone "):
        await converge(backend(compute), gateway("gcp", REGION, "gw-000000000002"))


async def test_the_fake_refuses_what_compute_engine_refuses(compute: FakeCompute) -> None:
    """The rules the fake holds the backend to, each refused the way the API refuses it."""
    gcp = backend(compute)
    gw = gateway("gcp", REGION, GATEWAY_ID)
    await converge(gcp, gw)
    driver = gcp.driver
    instances = driver.clients.client(compute_v1.InstancesClient)  # type: ignore[attr-defined]
    [created] = compute.instances.values()

    def instance(**changes: Any) -> compute_v1.Instance:
        body = {key: value for key, value in created.items() if key in ("machineType", "disks")}
        body["disks"] = [
            {
                "boot": True,
                "initializeParams": {"sourceImage": compute.disks[next(iter(compute.disks))]["sourceImage"]},
            }
        ]
        body.update(
            name="another",
            networkInterfaces=[{"network": f"projects/{compute.project}/global/networks/default"}],
        )
        body.update(changes)
        instance: compute_v1.Instance = compute_v1.Instance.from_json(
            json.dumps(body), ignore_unknown_fields=True
        )
        return instance

    refused = {
        "Label key 'Gatehouse' violates format constraints": instance(labels={"Gatehouse": "x"}),
        "Label value 'A/B' violates format constraints": instance(labels={"gatehouse": "A/B"}),
        "Metadata value for key 'startup-script' is 262145 bytes": instance(
            metadata={"items": [{"key": "startup-script", "value": "x" * (256 * 1024 + 1)}]}
        ),
        "[pd-standard] features are not compatible": instance(
            machineType=f"zones/{REGION}-a/machineTypes/c3-standard-4"
        ),
        "Must be a match of regex": instance(name="Another_Host"),
    }
    for message, body in refused.items():
        with pytest.raises(api_exceptions.BadRequest, match=re.escape(message)):
            instances.insert(project=compute.project, zone=f"{REGION}-a", instance_resource=body)
    addresses = driver.clients.client(compute_v1.AddressesClient)  # type: ignore[attr-defined]
    stale = compute_v1.RegionSetLabelsRequest(labels={"a": "b"}, label_fingerprint="stale")
    with pytest.raises(api_exceptions.PreconditionFailed, match="Labels fingerprint either invalid"):
        addresses.set_labels(
            project=compute.project,
            region=REGION,
            resource=f"gatehouse-{GATEWAY_ID}-0",
            region_set_labels_request_resource=stale,
        )


async def test_a_host_whose_envoy_never_connects_is_replaced_with_its_serial_output_shown(
    compute: FakeCompute,
) -> None:
    gw = gateway("gcp", REGION, GATEWAY_ID)
    gcp = backend(compute)
    await converge(gcp, gw)
    [key] = list(compute.instances)
    created = compute.instances[key]["creationTimestamp"]
    compute.consoles[key] = (
        "Booting from Hard Disk 0...\n"
        "google_metadata_script_runner: startup-script: gatehouse: pulling envoy\n"
        "google_metadata_script_runner: startup-script: docker: Error response from daemon: "
        "toomanyrequests: You have reached your unauthenticated pull rate limit.\n"
    )
    replaced = await never_connecting(gcp, gw)
    # Its launch time is the instance's creationTimestamp, so the deadline held across a restart.
    assert replaced.hosts[0].launched_at == datetime.fromisoformat(created).timestamp()
    assert replaced.message.startswith("host 0's Envoy did not connect within 600s: Booting from")
    assert "toomanyrequests" in replaced.message
    assert compute.instances == {}

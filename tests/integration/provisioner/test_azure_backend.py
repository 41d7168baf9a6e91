"""The azure backend: the real Azure SDKs (azure-identity, azure-mgmt-*) against a wire-level fake of
Resource Manager and the identity platform over TLS."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from services.provisioner.backends.azure.driver import AzureDriver
from services.provisioner.backends.base import BackendError, NotReady
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.credentials import AzureBackendConfig
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from tests.fakes.azure_arm import CLIENT_ID, CLIENT_SECRET, SUBSCRIPTION, TENANT, FakeAzure
from tests.integration.provisioner.harness import converge, delete_fully, gateway
from tests.integration.provisioner.overdue import never_connecting

REGION = "westeurope"
GATEWAY_ID = "gw-0123456789ab"
XDS = XdsEndpoint("xds.gatehouse.example", 50052)
VMS = "Microsoft.Compute/virtualMachines"
NICS = "Microsoft.Network/networkInterfaces"
IPS = "Microsoft.Network/publicIPAddresses"
NSGS = "Microsoft.Network/networkSecurityGroups"


@pytest.fixture
def azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzure]:
    with FakeAzure().serve(tmp_path) as fake:
        # The fake's self-signed certificate is trusted the way a private cloud's CA would be.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca_file))
        yield fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def backend(
    azure: FakeAzure,
    ports: frozenset[int] = frozenset(),
    secret: str = CLIENT_SECRET,
    clock: Clock | None = None,
) -> CloudGatewayBackend:
    config = AzureBackendConfig.model_validate(
        {
            "type": "azure",
            "subscription_id": SUBSCRIPTION,
            "tenant_id": TENANT,
            "creds": {"type": "client", "client_id": CLIENT_ID, "client_secret": secret},
            "endpoint_url": azure.url,
            "authority_url": azure.url,
        }
    )
    driver = AzureDriver(config) if clock is None else AzureDriver(config, clock=clock)
    return CloudGatewayBackend("azure", driver, XDS, lambda _: ports)


def one(azure: FakeAzure, kind: str) -> dict[str, Any]:
    [found] = azure.of_type(kind)
    return found


async def test_a_public_gateway_is_a_b1_ubuntu_vm_whose_nic_carries_the_security_group(
    azure: FakeAzure,
) -> None:
    gw = gateway("azure", REGION, GATEWAY_ID, domain="example.com")
    host = await converge(backend(azure), gw)

    assert set(azure.groups) == {f"gatehouse-{GATEWAY_ID}"}
    vm = one(azure, VMS)
    assert vm["name"] == f"gatehouse-{GATEWAY_ID}-0"
    assert vm["properties"]["hardwareProfile"]["vmSize"] == "Standard_B1s"
    image = vm["properties"]["storageProfile"]["imageReference"]
    assert (image["publisher"], image["offer"], image["sku"], image["version"]) == (
        "Canonical",
        "ubuntu-24_04-lts",
        "server",
        "latest",
    )
    assert vm["tags"]["gatehouse-gateway"] == GATEWAY_ID and vm["tags"]["gatehouse-host"] == "0"
    assert azure.custom_data[vm["name"]] == GatewayPlan.of(gw, XDS).startup_script(0)
    linux = vm["properties"]["osProfile"]["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True

    nic = one(azure, NICS)
    nsg = one(azure, NSGS)
    assert nic["properties"]["networkSecurityGroup"]["id"].lower() == nsg["id"].lower()
    rules = {
        (
            rule["properties"]["destinationPortRange"],
            rule["properties"]["access"],
            rule["properties"]["direction"],
        )
        for rule in nsg["properties"]["securityRules"]
    }
    assert rules == {("80", "Allow", "Inbound"), ("443", "Allow", "Inbound")}
    address = one(azure, IPS)
    assert (
        nic["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"]["id"].lower()
        == address["id"].lower()
    )
    assert host.hostname == address["properties"]["ipAddress"]

    before = azure.inventory()
    assert await converge(backend(azure), gw) == host
    assert azure.inventory() == before


async def test_a_private_gateway_has_no_public_ip(azure: FakeAzure) -> None:
    host = await converge(backend(azure), gateway("azure", REGION, GATEWAY_ID, public_ip=False))
    assert azure.of_type(IPS) == []
    nic = one(azure, NICS)
    assert host.hostname == nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]


async def test_replicas_and_scaling_down_remove_each_hosts_vm_nic_ip_and_disk(azure: FakeAzure) -> None:
    gw = gateway("azure", REGION, GATEWAY_ID, replicas=3)
    await converge(backend(azure, frozenset({5001})), gw)
    assert sorted(vm["name"] for vm in azure.of_type(VMS)) == [
        f"gatehouse-{GATEWAY_ID}-{i}" for i in range(3)
    ]
    assert (
        len(azure.of_type(NICS))
        == len(azure.of_type(IPS))
        == len(azure.of_type("Microsoft.Compute/disks"))
        == 3
    )
    ports = {
        rule["properties"]["destinationPortRange"] for rule in one(azure, NSGS)["properties"]["securityRules"]
    }
    assert ports == {"80", "443", "5001"}

    gw.spec.replicas = 1
    await converge(backend(azure), gw)
    for kind in (VMS, NICS, IPS, "Microsoft.Compute/disks"):
        assert [r["name"].removesuffix("-os") for r in azure.of_type(kind)] == [
            f"gatehouse-{GATEWAY_ID}-0"
        ], kind


async def test_delete_removes_the_resource_group_and_everything_in_it(azure: FakeAzure) -> None:
    gw = gateway("azure", REGION, GATEWAY_ID, replicas=2)
    await converge(backend(azure), gw)
    await delete_fully(backend(azure), gw)
    assert azure.inventory() == {"resource groups": set()}
    await delete_fully(backend(azure), gw)


async def test_a_crash_after_the_vm_was_asked_for_and_a_restart_leave_one_vm(azure: FakeAzure) -> None:
    gw = gateway("azure", REGION, GATEWAY_ID)
    crashed = backend(azure)
    plan = crashed.plan(gw)
    size = crashed.driver.instance_type(plan)
    crashed.driver.prepare(plan)
    crashed.driver.create_host(plan, 0, size, plan.host_fingerprint(size))
    await converge(backend(azure), gw)
    assert len(azure.of_type(VMS)) == 1


async def test_quota_sizes_and_regions_fail_in_one_line_with_the_clouds_words(azure: FakeAzure) -> None:
    azure.core_quota = 0
    with pytest.raises(BackendError, match=r"^azure: OperationNotAllowed: Operation could not be completed"):
        await converge(backend(azure), gateway("azure", REGION, GATEWAY_ID))
    with pytest.raises(BackendError, match=r"^azure: VM size Standard_X99 is not offered in westeurope$"):
        await converge(backend(azure), gateway("azure", REGION, GATEWAY_ID, instance_type="Standard_X99"))
    with pytest.raises(
        BackendError,
        match=r"^azure: no VM sizes are offered in marsnorth: is it a location of this subscription",
    ):
        await converge(backend(azure), gateway("azure", "marsnorth", GATEWAY_ID))


async def test_a_wrong_client_secret_fails_the_gateway_with_the_clouds_message(azure: FakeAzure) -> None:
    with pytest.raises(BackendError) as failure:
        await converge(backend(azure, secret="wrong"), gateway("azure", REGION, GATEWAY_ID))
    message = str(failure.value)
    assert message.startswith("azure: ") and "AADSTS7000215: Invalid client secret provided." in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (
            "Standard_D2ps_v5",
            "azure: VM size Standard_D2ps_v5 is Arm64, and gateway hosts boot the x64 Ubuntu image: "
            "choose an x64 size (the default is Standard_B1s)",
        ),
        (
            "Standard_A1_v2",
            "azure: VM size Standard_A1_v2 boots only Hyper-V generation V1 images, and gateway hosts "
            "boot a generation 2 Ubuntu image: choose a size that supports generation 2 "
            "(the default is Standard_B1s)",
        ),
        (
            "Standard_D2s_v5",
            "azure: VM size Standard_D2s_v5 is not available to this subscription in westeurope",
        ),
    ],
)
async def test_a_size_that_cannot_boot_the_image_or_is_restricted_is_refused_before_anything_is_made(
    azure: FakeAzure, size: str, message: str
) -> None:
    azure.restricted.add(("Standard_D2s_v5", REGION))
    with pytest.raises(BackendError) as refused:
        await converge(backend(azure), gateway("azure", REGION, GATEWAY_ID, instance_type=size))
    assert str(refused.value) == message
    assert azure.inventory() == {"resource groups": set()}


async def test_a_failed_vm_stays_through_its_backoff_with_azures_reason_then_is_replaced(
    azure: FakeAzure,
) -> None:
    allocation = (
        "Allocation failed. We do not have sufficient capacity for the requested VM size in this region. "
        "Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance"
    )
    azure.fail_next_vm("AllocationFailed", allocation)
    azure.fail_next_vm("AllocationFailed", allocation)
    clock = Clock()
    azure_backend = backend(azure, clock=clock)
    gw = gateway("azure", REGION, GATEWAY_ID)

    async def passes(count: int) -> list[str]:
        said = []
        for _ in range(count):
            with pytest.raises(NotReady) as pending:
                await azure_backend.create_or_update(gw)
            said.append(str(pending.value))
        return said

    said = await passes(4)
    [vm] = azure.of_type(VMS)
    assert vm["properties"]["provisioningState"] == "Failed"
    assert said[-1] == f"host 0 failed (AllocationFailed: {allocation}); replacing it in 30 s"
    # Listing the hosts (as replacing one does) reports the VM kept, neither running nor failed.
    [kept] = azure_backend.driver.hosts(azure_backend.plan(gw))
    assert (kept.running, kept.failed) == (False, False)
    clock.now += 29
    assert (await passes(1))[-1].endswith("replacing it in 1 s")
    assert [v["properties"]["vmId"] for v in azure.of_type(VMS)] == [vm["properties"]["vmId"]]

    # The back-off is over: replaced. The replacement fails too: twice as long this time.
    clock.now += 2
    said = await passes(4)
    [second] = azure.of_type(VMS)
    assert second["properties"]["vmId"] != vm["properties"]["vmId"]
    assert said[-1].endswith("replacing it in 60 s")
    clock.now += 61
    host = await converge(azure_backend, gw)
    [third] = azure.of_type(VMS)
    assert third["properties"]["provisioningState"] == "Succeeded"
    assert third["properties"]["vmId"] not in (vm["properties"]["vmId"], second["properties"]["vmId"])
    assert host.hostname == one(azure, IPS)["properties"]["ipAddress"]


@pytest.mark.parametrize("power", ["deallocated", "stopped"])
async def test_a_stopped_or_deallocated_vm_is_not_running_and_is_replaced_keeping_the_address(
    azure: FakeAzure, power: str
) -> None:
    gw = gateway("azure", REGION, GATEWAY_ID)
    host = await converge(backend(azure), gw)
    [vm] = azure.of_type(VMS)
    azure.set_power(vm["name"], power)
    azure_backend = backend(azure)
    [stopped] = azure_backend.driver.hosts(azure_backend.plan(gw))
    assert (stopped.running, stopped.failed) == (False, True)
    again = await converge(azure_backend, gw)
    # The same address; the host (made again under its name) is a new one from its launch time.
    assert dataclasses.replace(again, hosts=()) == dataclasses.replace(host, hosts=())
    assert [h.id for h in again.hosts] == [h.id for h in host.hosts]
    relaunched = again.hosts[0].launched_at
    assert relaunched is not None and relaunched > (host.hosts[0].launched_at or 0.0)
    [replacement] = azure.of_type(VMS)
    assert replacement["properties"]["vmId"] != vm["properties"]["vmId"]


async def test_the_fake_refuses_what_resource_manager_refuses(azure: FakeAzure) -> None:
    """The rules the fake holds the backend to, each refused the way ARM refuses it."""
    azure_backend = backend(azure)
    gw = gateway("azure", REGION, GATEWAY_ID)
    await converge(azure_backend, gw)
    compute = azure_backend.driver.clients.compute  # type: ignore[attr-defined]
    group = f"gatehouse-{GATEWAY_ID}"
    vm = compute.virtual_machines.get(group, f"gatehouse-{GATEWAY_ID}-0")
    vm.os_profile.admin_password = None
    vm.os_profile.require_guest_provision_signal = None

    def refused(change: Any) -> str:
        candidate = compute.virtual_machines.get(group, f"gatehouse-{GATEWAY_ID}-0")
        candidate.os_profile.custom_data = base64.b64encode(b"#!/bin/sh").decode()
        change(candidate)
        with pytest.raises(HttpResponseError) as error:
            compute.virtual_machines.begin_create_or_update(group, "another", candidate, polling=False)
        assert error.value.error is not None
        return f"{error.value.error.code}: {error.value.error.message}"

    too_big = base64.b64encode(b"x" * 65536).decode()
    assert refused(lambda v: setattr(v.os_profile, "custom_data", too_big)).startswith(
        "InvalidParameter: Custom data in OSProfile must be in Base64 encoding and with a maximum length "
        "of 87380 characters."
    )
    assert refused(lambda v: setattr(v, "tags", {"a/b": "c"})).startswith("InvalidTagNameCharacters: ")
    assert refused(lambda v: setattr(v.os_profile, "admin_username", "admin")) == (
        "InvalidParameter: The Admin Username specified is not allowed."
    )
    assert refused(lambda v: setattr(v.hardware_profile, "vm_size", "Standard_A1_v2")).startswith(
        "BadRequest: The selected VM size 'Standard_A1_v2' cannot boot Hypervisor Generation '2'."
    )
    # A VM list carries no instance view unless filtered by scale set.
    with pytest.raises(HttpResponseError, match=r"\$expand"):
        list(compute.virtual_machines.list(group, expand="instanceView"))


async def test_a_host_whose_envoy_never_connects_is_replaced_with_its_boot_diagnostics_log_shown(
    azure: FakeAzure,
) -> None:
    gw = gateway("azure", REGION, GATEWAY_ID)
    driven = backend(azure)
    await converge(driven, gw)
    vm = one(azure, VMS)
    # Boot diagnostics are on, in managed storage (no storage account to make).
    assert vm["properties"]["diagnosticsProfile"] == {"bootDiagnostics": {"enabled": True}}
    azure.consoles[vm["name"].lower()] = (
        "[    0.000000] Linux version 6.8.0-1020-azure\n"
        "cloud-init[912]: gatehouse: joining at https://xds.gatehouse.example:50055\n"
        "cloud-init[912]: gatehouse: join refused 5 times, giving up\n"
    )
    replaced = await never_connecting(driven, gw)
    # Its launch time is the VM's timeCreated, so the deadline held across a restart.
    created = datetime.fromisoformat(vm["properties"]["timeCreated"]).timestamp()
    assert replaced.hosts[0].launched_at == created
    assert replaced.message.startswith("host 0's Envoy did not connect within 600s: [    0.000000] Linux")
    assert "join refused 5 times, giving up" in replaced.message
    await converge(driven, gw)
    assert azure.of_type(VMS)[0]["properties"]["vmId"] != vm["properties"]["vmId"]

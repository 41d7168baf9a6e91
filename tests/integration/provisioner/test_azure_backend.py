"""The azure backend: the real Azure SDKs (azure-identity, azure-mgmt-*) against a wire-level fake of
Resource Manager and the identity platform over TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.provisioner.backends.azure.driver import AzureDriver
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.credentials import AzureBackendConfig
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from tests.fakes.azure_arm import CLIENT_ID, CLIENT_SECRET, SUBSCRIPTION, TENANT, FakeAzure
from tests.integration.provisioner.harness import converge, delete_fully, gateway

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


def backend(
    azure: FakeAzure, ports: frozenset[int] = frozenset(), secret: str = CLIENT_SECRET
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
    return CloudGatewayBackend("azure", AzureDriver(config), XDS, lambda _: ports)


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
        BackendError, match=r"^azure: NoRegisteredProviderFound: No registered resource provider"
    ):
        await converge(backend(azure), gateway("azure", "marsnorth", GATEWAY_ID))


async def test_a_wrong_client_secret_fails_the_gateway_with_the_clouds_message(azure: FakeAzure) -> None:
    with pytest.raises(BackendError) as failure:
        await converge(backend(azure, secret="wrong"), gateway("azure", REGION, GATEWAY_ID))
    message = str(failure.value)
    assert message.startswith("azure: ") and "AADSTS7000215: Invalid client secret provided." in message
    assert "\n" not in message

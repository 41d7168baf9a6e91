"""The azure backend: per gateway a resource group holding a virtual network, a network security
group allowing 80, 443 and mapped ports (attached to every host's NIC), and per host a static public
IP (when public), a NIC and a VM with the startup script as custom data. Deleting the gateway deletes
its resource group, which takes everything in it."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.compute.models import (
    DiskCreateOptionTypes,
    HardwareProfile,
    LinuxConfiguration,
    ManagedDiskParameters,
    NetworkInterfaceReference,
    NetworkProfile,
    OSDisk,
    OSProfile,
    SshConfiguration,
    SshPublicKey,
    StorageProfile,
    VirtualMachine,
)
from azure.mgmt.network.models import (
    AddressSpace,
    NetworkInterface,
    NetworkInterfaceIPConfiguration,
    NetworkSecurityGroup,
    PublicIPAddress,
    PublicIPAddressSku,
    SecurityRule,
    Subnet,
    VirtualNetwork,
)
from azure.mgmt.resource.resources.models import ResourceGroup
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.provisioner.backends.azure.clients import AzureClients, translate
from services.provisioner.backends.azure.images import UbuntuImages
from services.provisioner.backends.base import BackendError, HostInfo
from services.provisioner.backends.cloud import CloudHost, refuse_acm
from services.provisioner.credentials import AzureBackendConfig
from services.provisioner.hosts.plan import TAG_FINGERPRINT, TAG_HOST, GatewayPlan

DEFAULT_SIZE = "Standard_B1s"
ADDRESS_SPACE = "10.0.0.0/16"
SUBNET = "gateway"
SUBNET_PREFIX = "10.0.0.0/24"
ADMIN_USER = "gatehouse"
FIRST_RULE_PRIORITY = 100


def _unusable_ssh_key() -> str:
    """Azure insists on a login for Linux VMs; this key's private half is never kept, and no SSH
    port is open: configuration arrives over xDS."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


class AzureDriver:
    def __init__(self, config: AzureBackendConfig) -> None:
        self.config = config
        self.clients = AzureClients(config)
        self._images = UbuntuImages()
        self._sizes: dict[str, frozenset[str]] = {}

    def translate(self, error: Exception) -> Exception:
        return translate(error)

    @staticmethod
    def group(plan: GatewayPlan) -> str:
        return plan.base_name

    def _id(self, plan: GatewayPlan, kind: str, name: str) -> str:
        group = f"/subscriptions/{self.clients.subscription}/resourceGroups/{self.group(plan)}"
        return f"{group}/providers/{kind}/{name}"

    def instance_type(self, plan: GatewayPlan) -> str:
        size = plan.instance_type or DEFAULT_SIZE
        if plan.region not in self._sizes:
            listed = self.clients.compute.virtual_machine_sizes.list(plan.region)
            self._sizes[plan.region] = frozenset(found.name for found in listed)
        if size not in self._sizes[plan.region]:
            raise BackendError(f"azure: VM size {size} is not offered in {plan.region}")
        return size

    # -- what the hosts share -----------------------------------------------------------------

    def _group_state(self, plan: GatewayPlan) -> str | None:
        try:
            group = self.clients.resources.resource_groups.get(self.group(plan))
        except ResourceNotFoundError:
            return None
        return str(group.properties.provisioning_state) if group.properties else "Succeeded"

    def _rules(self, plan: GatewayPlan) -> list[SecurityRule]:
        return [
            SecurityRule(
                name=f"allow-tcp-{port}",
                protocol="Tcp",
                direction="Inbound",
                access="Allow",
                priority=FIRST_RULE_PRIORITY + offset,
                source_address_prefix="Internet",
                source_port_range="*",
                destination_address_prefix="*",
                destination_port_range=str(port),
            )
            for offset, port in enumerate(plan.inbound_ports)
        ]

    def prepare(self, plan: GatewayPlan) -> None:
        refuse_acm(plan, "azure")
        network = self.clients.network
        group = self.group(plan)
        if self._group_state(plan) == "Deleting":
            raise BackendError(
                f"azure: resource group {group} is still being deleted; apply again once it is gone"
            )
        self.clients.resources.resource_groups.create_or_update(
            group, ResourceGroup(location=plan.region, tags=plan.tags())
        )
        try:
            network.virtual_networks.get(group, plan.base_name)
        except ResourceNotFoundError:
            vnet = VirtualNetwork(
                location=plan.region,
                tags=plan.tags(),
                address_space=AddressSpace(address_prefixes=[ADDRESS_SPACE]),
                subnets=[Subnet(name=SUBNET, address_prefix=SUBNET_PREFIX)],
            )
            network.virtual_networks.begin_create_or_update(group, plan.base_name, vnet).result()
        wanted = self._rules(plan)
        try:
            current = network.network_security_groups.get(group, plan.base_name)
            have = sorted(
                (rule.name, rule.destination_port_range, rule.priority)
                for rule in current.security_rules or []
            )
            up_to_date = have == sorted(
                (rule.name, rule.destination_port_range, rule.priority) for rule in wanted
            )
        except ResourceNotFoundError:
            up_to_date = False
        if not up_to_date:
            nsg = NetworkSecurityGroup(location=plan.region, tags=plan.tags(), security_rules=wanted)
            network.network_security_groups.begin_create_or_update(group, plan.base_name, nsg).result()

    # -- hosts --------------------------------------------------------------------------------

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        if self._group_state(plan) in (None, "Deleting"):
            return []
        hosts = []
        for vm in self.clients.compute.virtual_machines.list(self.group(plan)):
            tags = vm.tags or {}
            state = vm.provisioning_state
            if state == "Deleting":
                continue
            hosts.append(
                CloudHost(
                    index=int(tags.get(TAG_HOST, "-1")),
                    id=vm.name,
                    fingerprint=tags.get(TAG_FINGERPRINT, ""),
                    running=state == "Succeeded",
                    failed=state == "Failed",
                )
            )
        return hosts

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        network, group, name = self.clients.network, self.group(plan), plan.host_name(index)
        tags = plan.tags(index, fingerprint)
        ip_configuration = NetworkInterfaceIPConfiguration(
            name="primary",
            primary=True,
            private_ip_allocation_method="Dynamic",
            subnet=Subnet(
                id=f"{self._id(plan, 'Microsoft.Network/virtualNetworks', plan.base_name)}/subnets/{SUBNET}"
            ),
        )
        if plan.public_ip:
            address = PublicIPAddress(
                location=plan.region,
                tags=tags,
                sku=PublicIPAddressSku(name="Standard"),
                public_ip_allocation_method="Static",
            )
            network.public_ip_addresses.begin_create_or_update(group, name, address).result()
            ip_configuration.public_ip_address = PublicIPAddress(
                id=self._id(plan, "Microsoft.Network/publicIPAddresses", name)
            )
        nic = NetworkInterface(
            location=plan.region,
            tags=tags,
            ip_configurations=[ip_configuration],
            # Attached to the NIC itself, so it applies whatever the subnet has.
            network_security_group=NetworkSecurityGroup(
                id=self._id(plan, "Microsoft.Network/networkSecurityGroups", plan.base_name)
            ),
        )
        network.network_interfaces.begin_create_or_update(group, name, nic).result()
        vm = VirtualMachine(
            location=plan.region,
            tags=tags,
            hardware_profile=HardwareProfile(vm_size=instance_type),
            storage_profile=StorageProfile(
                image_reference=self._images.reference(self.clients, plan.region),
                os_disk=OSDisk(
                    name=f"{name}-os",
                    create_option=DiskCreateOptionTypes.FROM_IMAGE,
                    delete_option="Delete",
                    managed_disk=ManagedDiskParameters(storage_account_type="StandardSSD_LRS"),
                ),
            ),
            os_profile=OSProfile(
                computer_name=name,
                admin_username=ADMIN_USER,
                custom_data=base64.b64encode(plan.startup_script(index).encode()).decode(),
                linux_configuration=LinuxConfiguration(
                    disable_password_authentication=True,
                    ssh=SshConfiguration(
                        public_keys=[
                            SshPublicKey(
                                path=f"/home/{ADMIN_USER}/.ssh/authorized_keys", key_data=_unusable_ssh_key()
                            )
                        ]
                    ),
                ),
            ),
            network_profile=NetworkProfile(
                network_interfaces=[
                    NetworkInterfaceReference(
                        id=self._id(plan, "Microsoft.Network/networkInterfaces", name),
                        primary=True,
                        delete_option="Delete",
                    )
                ]
            ),
        )
        # Not waited for (no poller thread either): the next pass lists it, provisioning or done.
        self.clients.compute.virtual_machines.begin_create_or_update(group, name, vm, polling=False)

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        group, name = self.group(plan), host.id
        steps: list[Any] = [
            lambda: self.clients.compute.virtual_machines.begin_delete(group, name),
            lambda: self.clients.network.network_interfaces.begin_delete(group, name),
            lambda: self.clients.compute.disks.begin_delete(group, f"{name}-os"),
        ]
        if host.index >= plan.replicas:
            steps.append(lambda: self.clients.network.public_ip_addresses.begin_delete(group, name))
        for step in steps:
            with contextlib.suppress(ResourceNotFoundError):
                step().result()

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        group, name = self.group(plan), hosts[0].id
        if plan.public_ip:
            address = self.clients.network.public_ip_addresses.get(group, name)
            return HostInfo(hostname=address.ip_address or "")
        nic = self.clients.network.network_interfaces.get(group, name)
        return HostInfo(hostname=nic.ip_configurations[0].private_ip_address or "")

    def delete_all(self, plan: GatewayPlan) -> list[str]:
        state = self._group_state(plan)
        if state is None:
            return []
        if state != "Deleting":
            # Not waited for: everything in the group goes with it; the next pass looks again.
            self.clients.resources.resource_groups.begin_delete(self.group(plan), polling=False)
            state = self._group_state(plan)
        return [] if state is None else [f"resource group {self.group(plan)}"]

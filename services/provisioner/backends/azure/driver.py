"""The azure backend: per gateway a resource group holding a virtual network, a network security
group allowing 80, 443 and mapped ports (attached to every host's NIC), and per host a static public
IP (when public), a NIC and a VM with the startup script as custom data. Deleting the gateway deletes
its resource group, which takes everything in it.

A size is taken only if the Resource SKUs API offers it in the location to this subscription and it
boots the image hosts get (x64, Hyper-V generation 2). A host runs when its VM is provisioned and
powered on; one stopped or deallocated outside Gatehouse is replaced. A VM that ends `Failed` stays
until its back-off is over (30 s, doubling for each failure of its slot, up to 15 minutes), with
Azure's reason shown on the gateway meanwhile, and is then replaced. VMs have boot diagnostics on, in
managed storage (nothing to create or pay for apart): a host whose Envoy never came shows its serial
log, read through `retrieveBootDiagnosticsData`'s short-lived SAS URI."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.compute.models import (
    BootDiagnostics,
    DiagnosticsProfile,
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
from services.provisioner.backends.base import BackendError, HostInfo, NotReady
from services.provisioner.backends.cloud import CloudHost, refuse_acm
from services.provisioner.credentials import AzureBackendConfig
from services.provisioner.hosts.plan import TAG_FINGERPRINT, TAG_HOST, GatewayPlan

# The models take their properties flattened (name=..., protocol=...) at run time, but their typed
# overloads list only `properties=`: hence the ignores where one is made.

DEFAULT_SIZE = "Standard_B1s"
ADDRESS_SPACE = "10.0.0.0/16"
SUBNET = "gateway"
SUBNET_PREFIX = "10.0.0.0/24"
ADMIN_USER = "gatehouse"
FIRST_RULE_PRIORITY = 100
# The image hosts boot (Canonical's Ubuntu LTS `server` SKU): x64, Hyper-V generation 2.
IMAGE_ARCHITECTURE = "x64"
IMAGE_GENERATION = "V2"
SKUS_SECONDS = 3600.0
FAILED_BACKOFF_SECONDS = 30.0
FAILED_BACKOFF_MAX_SECONDS = 900.0
# Power states (the instance view's `PowerState/…`) of a VM that will not run again on its own.
POWERED_OFF = frozenset({"stopped", "deallocated"})
# The serial log's SAS URI lives this long; of the log, the end is kept (it grows with every boot).
BOOT_LOG_SAS_MINUTES = 5
BOOT_LOG_BYTES = 64 * 1024
BOOT_LOG_TIMEOUT_SECONDS = 20.0


@dataclass
class SlotFailures:
    """The VMs of one host slot that ended `Failed`: how many, and when the current one was seen."""

    count: int
    vm_id: str
    since: float


@dataclass(frozen=True)
class VmState:
    provisioning: str
    power: str | None
    # The failure Azure reports for a `Failed` VM: "Code: message".
    failure: str | None


def _capabilities(sku: Any) -> dict[str, str]:
    return {capability.name: capability.value for capability in sku.capabilities or []}


def _restricted(sku: Any, location: str) -> bool:
    for restriction in sku.restrictions or []:
        # `values` is the model's mapping method: the field is `values_property`.
        where = [value.lower() for value in restriction.values_property or []]
        if restriction.type == "Location" and location.lower() in where:
            return True
    return False


def _unusable_ssh_key() -> str:
    """Azure insists on a login for Linux VMs; this key's private half is never kept, and no SSH
    port is open: configuration arrives over xDS."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


class AzureDriver:
    def __init__(self, config: AzureBackendConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clients = AzureClients(config)
        self._images = UbuntuImages()
        self._clock = clock
        self._skus: dict[str, tuple[float, dict[str, Any]]] = {}
        self._failures: dict[tuple[str, int], SlotFailures] = {}

    def translate(self, error: Exception) -> Exception:
        return translate(error)

    @staticmethod
    def group(plan: GatewayPlan) -> str:
        return plan.base_name

    def _id(self, plan: GatewayPlan, kind: str, name: str) -> str:
        group = f"/subscriptions/{self.clients.subscription}/resourceGroups/{self.group(plan)}"
        return f"{group}/providers/{kind}/{name}"

    def _sizes(self, location: str) -> dict[str, Any]:
        """The VM sizes the Resource SKUs API lists for the location, by name."""
        cached = self._skus.get(location)
        if cached is None or self._clock() - cached[0] > SKUS_SECONDS:
            listed = self.clients.compute.resource_skus.list(filter=f"location eq '{location}'")
            sizes = {
                sku.name: sku
                for sku in listed
                if sku.name is not None
                and sku.resource_type == "virtualMachines"
                and location.lower() in (place.lower() for place in sku.locations or [])
            }
            cached = (self._clock(), sizes)
            self._skus[location] = cached
        return cached[1]

    def instance_type(self, plan: GatewayPlan) -> str:
        size = plan.instance_type or DEFAULT_SIZE
        sizes = self._sizes(plan.region)
        if not sizes:
            raise BackendError(
                f"azure: no VM sizes are offered in {plan.region}: is it a location of this subscription?"
            )
        sku = sizes.get(size)
        if sku is None:
            raise BackendError(f"azure: VM size {size} is not offered in {plan.region}")
        if _restricted(sku, plan.region):
            raise BackendError(
                f"azure: VM size {size} is not available to this subscription in {plan.region}"
            )
        capabilities = _capabilities(sku)
        architecture = capabilities.get("CpuArchitectureType", IMAGE_ARCHITECTURE)
        if architecture.lower() != IMAGE_ARCHITECTURE:
            raise BackendError(
                f"azure: VM size {size} is {architecture}, and gateway hosts boot the x64 Ubuntu image: "
                f"choose an x64 size (the default is {DEFAULT_SIZE})"
            )
        generations = capabilities.get("HyperVGenerations", "V1").replace(" ", "").split(",")
        if IMAGE_GENERATION not in generations:
            raise BackendError(
                f"azure: VM size {size} boots only Hyper-V generation {', '.join(generations)} images, and "
                f"gateway hosts boot a generation 2 Ubuntu image: choose a size that supports generation 2 "
                f"(the default is {DEFAULT_SIZE})"
            )
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
            SecurityRule(  # type: ignore[call-overload]
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
            vnet = VirtualNetwork(  # type: ignore[call-overload]
                location=plan.region,
                tags=plan.tags(),
                address_space=AddressSpace(address_prefixes=[ADDRESS_SPACE]),
                subnets=[Subnet(name=SUBNET, address_prefix=SUBNET_PREFIX)],  # type: ignore[call-overload]
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
            nsg = NetworkSecurityGroup(location=plan.region, tags=plan.tags(), security_rules=wanted)  # type: ignore[call-overload]
            network.network_security_groups.begin_create_or_update(group, plan.base_name, nsg).result()
        self._hold_failed(plan)

    def _hold_failed(self, plan: GatewayPlan) -> None:
        """While a `Failed` VM's slot backs off, the pass stops here with Azure's reason (and `hosts`
        keeps the VM); once it is over, `hosts` reports it failed and it is replaced."""
        waiting = [
            kept
            for index, vm, state in self._vms(plan)
            if state.provisioning == "Failed" and 0 <= index < plan.replicas
            for kept in [self._backing_off(plan, index, vm, state.failure)]
            if kept is not None
        ]
        if waiting:
            message = "; ".join(sorted(str(pending) for pending in waiting))
            raise NotReady(message, retry_after=max(1.0, min(pending.retry_after for pending in waiting)))

    # -- hosts --------------------------------------------------------------------------------

    def _state(self, plan: GatewayPlan, vm: Any) -> VmState:
        """The VM's provisioning and power states, from its instance view (a VM list does not carry
        it: `$expand=instanceView` needs a scale set filter)."""
        try:
            view = self.clients.compute.virtual_machines.instance_view(self.group(plan), vm.name)
        except ResourceNotFoundError:
            return VmState("Deleting", None, None)
        power, failure = None, None
        for status in view.statuses or []:
            code = status.code or ""
            if code.startswith("PowerState/"):
                power = code.split("/", 1)[1]
            elif code.startswith("ProvisioningState/failed"):
                reason = code.split("/")[2] if code.count("/") >= 2 else "Failed"
                failure = f"{reason}: {' '.join((status.message or status.display_status or '').split())}"
        return VmState(str(vm.provisioning_state), power, failure)

    def _backing_off(self, plan: GatewayPlan, index: int, vm: Any, failure: str | None) -> NotReady | None:
        """Why a `Failed` VM is kept for now (its slot's back-off is not over), or None to replace it."""
        key = (plan.gateway_id, index)
        now = self._clock()
        seen = self._failures.get(key)
        if seen is None or seen.vm_id != vm.vm_id:
            seen = SlotFailures((seen.count if seen else 0) + 1, vm.vm_id, now)
            self._failures[key] = seen
        delay = min(FAILED_BACKOFF_SECONDS * 2 ** (seen.count - 1), FAILED_BACKOFF_MAX_SECONDS)
        left = seen.since + delay - now
        if left <= 0:
            return None
        why = f"host {index} failed ({failure or 'provisioning failed'}); replacing it in {left:.0f} s"
        return NotReady(why, retry_after=left)

    def _vms(self, plan: GatewayPlan) -> list[tuple[int, Any, VmState]]:
        """The gateway's VMs not going away: host index, the VM, its states."""
        if self._group_state(plan) in (None, "Deleting"):
            return []
        found = []
        for vm in self.clients.compute.virtual_machines.list(self.group(plan)):
            if vm.provisioning_state == "Deleting":
                continue
            state = self._state(plan, vm)
            if state.provisioning != "Deleting":
                found.append((int((vm.tags or {}).get(TAG_HOST, "-1")), vm, state))
        return found

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        hosts = []
        for index, vm, state in self._vms(plan):
            running = state.provisioning == "Succeeded" and state.power == "running"
            failed = state.power in POWERED_OFF
            if state.provisioning == "Failed":
                # Kept while its slot backs off (`_hold_failed` says why); replaced after.
                wanted = 0 <= index < plan.replicas
                failed = not wanted or self._backing_off(plan, index, vm, state.failure) is None
            elif running:
                self._failures.pop((plan.gateway_id, index), None)
            hosts.append(
                CloudHost(
                    index=index,
                    id=vm.name,
                    fingerprint=(vm.tags or {}).get(TAG_FINGERPRINT, ""),
                    running=running,
                    failed=failed,
                    launched_at=vm.time_created.timestamp() if vm.time_created else None,
                )
            )
        return hosts

    def console_output(self, plan: GatewayPlan, host: CloudHost) -> str | None:
        """The end of the VM's serial log from boot diagnostics (managed storage); None before Azure
        has written one."""
        data = self.clients.compute.virtual_machines.retrieve_boot_diagnostics_data(
            self.group(plan), host.id, sas_uri_expiration_time_in_minutes=BOOT_LOG_SAS_MINUTES
        )
        if not data.serial_console_log_blob_uri:
            return None
        # A SAS URI carries its own authorization: no bearer token goes with it.
        response = requests.get(data.serial_console_log_blob_uri, timeout=BOOT_LOG_TIMEOUT_SECONDS)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.content[-BOOT_LOG_BYTES:].decode(errors="replace") or None

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        network, group, name = self.clients.network, self.group(plan), plan.host_name(index)
        tags = plan.tags(index, fingerprint)
        ip_configuration = NetworkInterfaceIPConfiguration(  # type: ignore[call-overload]
            name="primary",
            primary=True,
            private_ip_allocation_method="Dynamic",
            subnet=Subnet(
                id=f"{self._id(plan, 'Microsoft.Network/virtualNetworks', plan.base_name)}/subnets/{SUBNET}"
            ),
        )
        if plan.public_ip:
            address = PublicIPAddress(  # type: ignore[call-overload]
                location=plan.region,
                tags=tags,
                sku=PublicIPAddressSku(name="Standard"),
                public_ip_allocation_method="Static",
            )
            network.public_ip_addresses.begin_create_or_update(group, name, address).result()
            ip_configuration.public_ip_address = PublicIPAddress(
                id=self._id(plan, "Microsoft.Network/publicIPAddresses", name)
            )
        nic = NetworkInterface(  # type: ignore[call-overload]
            location=plan.region,
            tags=tags,
            ip_configurations=[ip_configuration],
            # Attached to the NIC itself, so it applies whatever the subnet has.
            network_security_group=NetworkSecurityGroup(
                id=self._id(plan, "Microsoft.Network/networkSecurityGroups", plan.base_name)
            ),
        )
        network.network_interfaces.begin_create_or_update(group, name, nic).result()
        vm = VirtualMachine(  # type: ignore[call-overload]
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
            # Boot diagnostics in managed storage: the serial log, for a host whose Envoy never came.
            diagnostics_profile=DiagnosticsProfile(boot_diagnostics=BootDiagnostics(enabled=True)),
            network_profile=NetworkProfile(
                network_interfaces=[
                    NetworkInterfaceReference(  # type: ignore[call-overload]
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

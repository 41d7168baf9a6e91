"""The gcp backend: a firewall rule for the gateway's network tag, a Compute Engine instance per host
with the startup script, and a static external address per host when public (none when private).

Hosts spread over the region's zones that offer the machine type, in the configured network (and,
in a custom-mode network, the subnetwork configured for the region), on a boot disk of a type the
machine series accepts. Static addresses are labelled with `setLabels` (`addresses.insert` drops
labels), so they are found by label, and by name, when the gateway goes."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime

from google.api_core import exceptions as api_exceptions
from google.cloud import compute_v1

from services.provisioner.backends.base import BackendError, HostInfo
from services.provisioner.backends.cloud import CloudHost, refuse_acm
from services.provisioner.backends.gcp.clients import GcpClients, OperationError, labels, translate
from services.provisioner.backends.gcp.images import UbuntuImages
from services.provisioner.credentials import GCPBackendConfig
from services.provisioner.hosts.plan import TAG_FINGERPRINT, TAG_GATEWAY, TAG_HOST, GatewayPlan

DEFAULT_MACHINE_TYPE = "e2-small"
BOOT_DISK_GB = 10
ANYWHERE = "0.0.0.0/0"
GONE_STATES = ("STOPPING",)
FAILED_STATES = ("STOPPED", "SUSPENDING", "SUSPENDED", "TERMINATED")
# How long which zones offer a machine type is trusted.
OFFER_SECONDS = 3600.0
# Series that take Hyperdisk only, no Persistent Disk ("Supported disk types" of each series,
# https://cloud.google.com/compute/docs/machine-resource#machine_type_comparison); every other
# series takes pd-balanced, which the API's default (pd-standard) is not for C3, H3 and others.
HYPERDISK_ONLY_SERIES = frozenset({"n4", "n4a", "n4d", "c4", "c4a", "c4d", "x4", "a4", "a4x", "h4d", "m4"})


def boot_disk_type(machine_type: str) -> str:
    """A boot disk type the machine type's series accepts."""
    series = machine_type.split("-", 1)[0]
    return "hyperdisk-balanced" if series in HYPERDISK_ONLY_SERIES else "pd-balanced"


def _seconds(timestamp: str) -> float | None:
    """An RFC 3339 `creationTimestamp` ("2025-01-15T04:05:06.789-08:00") in seconds since the epoch."""
    try:
        return datetime.fromisoformat(timestamp).timestamp() if timestamp else None
    except ValueError:
        return None


def _label_filter(plan: GatewayPlan) -> str:
    return f'labels.{TAG_GATEWAY} = "{plan.gateway_id}"'


@dataclass(frozen=True)
class MachineOffer:
    """Where in a region a machine type can be had, and its CPU architecture."""

    at: float
    zones: tuple[str, ...]
    architecture: str


class GcpDriver:
    def __init__(self, config: GCPBackendConfig) -> None:
        self.config = config
        self.clients = GcpClients(config)
        self.project = config.project_id
        self._images = UbuntuImages()
        self._zones: dict[str, list[str]] = {}
        self._offers: dict[tuple[str, str], MachineOffer] = {}
        self._subnetworks: dict[str, str | None] = {}

    def translate(self, error: Exception) -> Exception:
        return translate(error)

    def _region_zones(self, region: str) -> list[str]:
        if region not in self._zones:
            try:
                found = self.clients.client(compute_v1.RegionsClient).get(project=self.project, region=region)
            except api_exceptions.NotFound:
                raise BackendError(f"gcp: region {region} not found in project {self.project}") from None
            self._zones[region] = sorted(zone.rsplit("/", 1)[-1] for zone in found.zones)
        return self._zones[region]

    def _offer(self, region: str, machine_type: str) -> MachineOffer:
        """Machine types are offered zone by zone: each zone of the region is asked."""
        cached = self._offers.get((region, machine_type))
        if cached is not None and time.monotonic() - cached.at < OFFER_SECONDS:
            return cached
        machine_types = self.clients.client(compute_v1.MachineTypesClient)
        zones, architecture = [], "X86_64"
        for zone in self._region_zones(region):
            try:
                found = machine_types.get(project=self.project, zone=zone, machine_type=machine_type)
            except api_exceptions.NotFound:
                continue
            zones.append(zone)
            architecture = found.architecture or architecture
        if not zones:
            raise BackendError(f"gcp: machine type {machine_type} is not offered in any zone of {region}")
        offer = MachineOffer(time.monotonic(), tuple(zones), architecture)
        self._offers[(region, machine_type)] = offer
        return offer

    def _zone(self, plan: GatewayPlan, index: int, machine_type: str) -> str:
        """Host `index`'s zone: the offering zones in turn."""
        zones = self._offer(plan.region, machine_type).zones
        return zones[index % len(zones)]

    def instance_type(self, plan: GatewayPlan) -> str:
        machine_type = plan.instance_type or DEFAULT_MACHINE_TYPE
        self._offer(plan.region, machine_type)
        return machine_type

    # -- network ------------------------------------------------------------------------------

    def _network_link(self) -> str:
        return f"projects/{self.project}/global/networks/{self.config.vpc_name}"

    def _subnetwork(self, region: str) -> str | None:
        """The subnetwork hosts in `region` get; None where an auto-mode network picks its own."""
        if region in self._subnetworks:
            return self._subnetworks[region]
        vpc = self.config.vpc_name
        try:
            network = self.clients.client(compute_v1.NetworksClient).get(project=self.project, network=vpc)
        except api_exceptions.NotFound:
            raise BackendError(f"gcp: network {vpc} not found in project {self.project}") from None
        wanted = (self.config.subnetworks or {}).get(region)
        if wanted is None:
            custom = not network.auto_create_subnetworks and not network.I_pv4_range
            if custom:
                raise BackendError(
                    f"gcp: network {vpc} is a custom-mode VPC: hosts need a subnetwork; set "
                    f"subnetworks: {{{region}: <subnetwork>}} in the project's gcp backend"
                )
            self._subnetworks[region] = None
            return None
        subnetworks = self.clients.client(compute_v1.SubnetworksClient)
        try:
            subnet = subnetworks.get(project=self.project, region=region, subnetwork=wanted)
        except api_exceptions.NotFound:
            raise BackendError(f"gcp: subnetwork {wanted} not found in {region}") from None
        owner = subnet.network.rsplit("/", 1)[-1]
        if owner != vpc:
            raise BackendError(f"gcp: subnetwork {wanted} in {region} belongs to network {owner}, not {vpc}")
        self._subnetworks[region] = f"projects/{self.project}/regions/{region}/subnetworks/{wanted}"
        return self._subnetworks[region]

    # -- firewall -----------------------------------------------------------------------------

    def _firewall(self, plan: GatewayPlan) -> compute_v1.Firewall:
        return compute_v1.Firewall(
            name=plan.base_name,
            description=f"Gatehouse gateway {plan.name} ({plan.gateway_id}): 80, 443 and mapped ports",
            network=self._network_link(),
            direction="INGRESS",
            priority=1000,
            source_ranges=[ANYWHERE],
            target_tags=[plan.base_name],
            allowed=[
                compute_v1.Allowed(I_p_protocol="tcp", ports=[str(port) for port in plan.inbound_ports])
            ],
        )

    def prepare(self, plan: GatewayPlan) -> None:
        refuse_acm(plan, "gcp")
        self._subnetwork(plan.region)
        firewalls = self.clients.client(compute_v1.FirewallsClient)
        wanted = self._firewall(plan)
        try:
            current = firewalls.get(project=self.project, firewall=wanted.name)
        except api_exceptions.NotFound:
            with contextlib.suppress(api_exceptions.Conflict):
                self.clients.wait(firewalls.insert_unary(project=self.project, firewall_resource=wanted))
            return
        have = sorted(port for rule in current.allowed for port in rule.ports)
        if have != sorted(wanted.allowed[0].ports) or list(current.target_tags) != list(wanted.target_tags):
            self.clients.wait(
                firewalls.patch_unary(project=self.project, firewall=wanted.name, firewall_resource=wanted)
            )

    # -- hosts --------------------------------------------------------------------------------

    def _instances(self, plan: GatewayPlan) -> list[compute_v1.Instance]:
        request = compute_v1.AggregatedListInstancesRequest(project=self.project, filter=_label_filter(plan))
        pages = self.clients.client(compute_v1.InstancesClient).aggregated_list(request=request)
        return [instance for _, scoped in pages for instance in scoped.instances]

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        hosts = []
        for instance in self._instances(plan):
            if instance.status in GONE_STATES:
                continue
            interface = instance.network_interfaces[0] if instance.network_interfaces else None
            configs = interface.access_configs if interface else []
            hosts.append(
                CloudHost(
                    index=int(instance.labels.get(TAG_HOST, "-1")),
                    id=f"{instance.zone.rsplit('/', 1)[-1]}/{instance.name}",
                    fingerprint=instance.labels.get(TAG_FINGERPRINT, ""),
                    running=instance.status == "RUNNING",
                    public_address=configs[0].nat_i_p if configs else None,
                    private_address=interface.network_i_p if interface else None,
                    failed=instance.status in FAILED_STATES,
                    launched_at=_seconds(instance.creation_timestamp),
                )
            )
        return hosts

    def console_output(self, plan: GatewayPlan, host: CloudHost) -> str | None:
        """Serial port 1 (where the startup script's output goes), at most its last 1 MB."""
        zone, name = host.id.split("/", 1)
        instances = self.clients.client(compute_v1.InstancesClient)
        request = compute_v1.GetSerialPortOutputInstanceRequest(
            project=self.project, zone=zone, instance=name, port=1
        )
        output = instances.get_serial_port_output(request=request)
        return output.contents or None

    def _static_address(self, plan: GatewayPlan, index: int) -> str:
        """Host `index`'s static address, labelled like the gateway's other resources."""
        addresses = self.clients.client(compute_v1.AddressesClient)
        name = plan.host_name(index)
        try:
            found = addresses.get(project=self.project, region=plan.region, address=name)
        except api_exceptions.NotFound:
            # `insert` drops labels ("only added or modified by the setLabels method"): set below.
            resource = compute_v1.Address(
                name=name,
                address_type="EXTERNAL",
                network_tier="PREMIUM",
                description=f"Gatehouse gateway {plan.name} ({plan.gateway_id}), host {index}",
            )
            with contextlib.suppress(api_exceptions.Conflict):
                self.clients.wait(
                    addresses.insert_unary(
                        project=self.project, region=plan.region, address_resource=resource
                    )
                )
            found = addresses.get(project=self.project, region=plan.region, address=name)
        wanted = labels(plan.tags(index))
        if dict(found.labels) != wanted:
            request = compute_v1.RegionSetLabelsRequest(
                labels=wanted, label_fingerprint=found.label_fingerprint
            )
            self.clients.wait(
                addresses.set_labels_unary(
                    project=self.project,
                    region=plan.region,
                    resource=name,
                    region_set_labels_request_resource=request,
                )
            )
        return str(found.address)

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        zone = self._zone(plan, index, instance_type)
        image = self._images.image(self.clients, self._offer(plan.region, instance_type).architecture)
        host_labels = labels(plan.tags(index, fingerprint))
        interface = compute_v1.NetworkInterface(network=self._network_link())
        subnetwork = self._subnetwork(plan.region)
        if subnetwork is not None:
            interface.subnetwork = subnetwork
        if plan.public_ip:
            interface.access_configs = [
                compute_v1.AccessConfig(
                    name="external", type_="ONE_TO_ONE_NAT", nat_i_p=self._static_address(plan, index)
                )
            ]
        instance = compute_v1.Instance(
            name=plan.host_name(index),
            description=f"Gatehouse gateway {plan.name} ({plan.gateway_id}), host {index}",
            machine_type=f"zones/{zone}/machineTypes/{instance_type}",
            labels=host_labels,
            tags=compute_v1.Tags(items=[plan.base_name]),
            metadata=compute_v1.Metadata(
                items=[compute_v1.Items(key="startup-script", value=plan.startup_script(index))]
            ),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=image,
                        disk_size_gb=BOOT_DISK_GB,
                        disk_type=f"zones/{zone}/diskTypes/{boot_disk_type(instance_type)}",
                        labels=host_labels,
                    ),
                )
            ],
            network_interfaces=[interface],
            # No service account: nothing on the host can call Google APIs.
            service_accounts=[],
        )
        instances = self.clients.client(compute_v1.InstancesClient)
        try:
            operation = instances.insert_unary(project=self.project, zone=zone, instance_resource=instance)
        except api_exceptions.Conflict:
            return  # made by an earlier pass whose answer was lost; listed by its labels next time
        self.clients.wait(operation)

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        zone, name = host.id.split("/", 1)
        self._delete_instances(plan, [(zone, name)])
        if host.index >= plan.replicas:
            self._release_address(plan, host.index)

    def _delete_instances(self, plan: GatewayPlan, instances: list[tuple[str, str]]) -> None:
        client = self.clients.client(compute_v1.InstancesClient)
        operations = []
        for zone, name in instances:
            with contextlib.suppress(api_exceptions.NotFound):
                operations.append(client.delete_unary(project=self.project, zone=zone, instance=name))
        for operation in operations:
            self.clients.wait(operation)

    def _release_address(self, plan: GatewayPlan, index: int) -> None:
        addresses = self.clients.client(compute_v1.AddressesClient)
        with contextlib.suppress(api_exceptions.NotFound):
            self.clients.wait(
                addresses.delete_unary(
                    project=self.project, region=plan.region, address=plan.host_name(index)
                )
            )

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        first = hosts[0]
        return HostInfo(hostname=(first.public_address if plan.public_ip else first.private_address) or "")

    def delete_all(self, plan: GatewayPlan) -> list[str]:
        remaining: list[str] = []
        found = [(instance.zone.rsplit("/", 1)[-1], instance.name) for instance in self._instances(plan)]
        self._delete_instances(plan, found)
        addresses = self.clients.client(compute_v1.AddressesClient)
        # By label, and by name too: an address whose labels were never set (made before they were
        # set with setLabels, or a crash between the insert and setLabels) is the gateway's as well.
        found_addresses: dict[str, compute_v1.Address] = {}
        for expression in (_label_filter(plan), f'name eq "{plan.base_name}-[0-9]+"'):
            listed = compute_v1.ListAddressesRequest(
                project=self.project, region=plan.region, filter=expression
            )
            found_addresses.update((address.name, address) for address in addresses.list(request=listed))
        for address in found_addresses.values():
            try:
                self.clients.wait(
                    addresses.delete_unary(project=self.project, region=plan.region, address=address.name)
                )
            except OperationError as error:
                if "IN_USE" not in error.code:
                    raise
                remaining.append(f"address {address.name}")
        disks = self.clients.client(compute_v1.DisksClient)
        request = compute_v1.AggregatedListDisksRequest(project=self.project, filter=_label_filter(plan))
        for zone, scoped in disks.aggregated_list(request=request):
            for disk in scoped.disks:
                self.clients.wait(
                    disks.delete_unary(project=self.project, zone=zone.removeprefix("zones/"), disk=disk.name)
                )
        try:
            firewalls = self.clients.client(compute_v1.FirewallsClient)
            self.clients.wait(firewalls.delete_unary(project=self.project, firewall=plan.base_name))
        except api_exceptions.NotFound:
            pass
        return remaining

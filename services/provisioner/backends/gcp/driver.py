"""The gcp backend: a firewall rule for the gateway's network tag, a Compute Engine instance per host
with the startup script, and a static external address per host when public (none when private)."""

from __future__ import annotations

import contextlib

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


def _label_filter(plan: GatewayPlan) -> str:
    return f'labels.{TAG_GATEWAY} = "{plan.gateway_id}"'


class GcpDriver:
    def __init__(self, config: GCPBackendConfig) -> None:
        self.config = config
        self.clients = GcpClients(config)
        self.project = config.project_id
        self._images = UbuntuImages()
        self._zones: dict[str, list[str]] = {}
        self._architectures: dict[str, str] = {}

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

    def _zone(self, plan: GatewayPlan, index: int) -> str:
        zones = self._region_zones(plan.region)
        return zones[index % len(zones)]

    def instance_type(self, plan: GatewayPlan) -> str:
        machine_type = plan.instance_type or DEFAULT_MACHINE_TYPE
        if machine_type not in self._architectures:
            zone = self._zone(plan, 0)
            try:
                found = self.clients.client(compute_v1.MachineTypesClient).get(
                    project=self.project, zone=zone, machine_type=machine_type
                )
            except api_exceptions.NotFound:
                raise BackendError(f"gcp: machine type {machine_type} does not exist in {zone}") from None
            self._architectures[machine_type] = found.architecture or "X86_64"
        return machine_type

    # -- firewall -----------------------------------------------------------------------------

    def _firewall(self, plan: GatewayPlan) -> compute_v1.Firewall:
        return compute_v1.Firewall(
            name=plan.base_name,
            description=f"Gatehouse gateway {plan.name} ({plan.gateway_id}): 80, 443 and mapped ports",
            network=f"projects/{self.project}/global/networks/{self.config.vpc_name}",
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
                )
            )
        return hosts

    def _static_address(self, plan: GatewayPlan, index: int) -> str:
        addresses = self.clients.client(compute_v1.AddressesClient)
        name = plan.host_name(index)
        try:
            return str(addresses.get(project=self.project, region=plan.region, address=name).address)
        except api_exceptions.NotFound:
            pass
        resource = compute_v1.Address(
            name=name,
            address_type="EXTERNAL",
            network_tier="PREMIUM",
            description=f"Gatehouse gateway {plan.name} ({plan.gateway_id}), host {index}",
            labels=labels(plan.tags(index)),
        )
        with contextlib.suppress(api_exceptions.Conflict):
            self.clients.wait(
                addresses.insert_unary(project=self.project, region=plan.region, address_resource=resource)
            )
        return str(addresses.get(project=self.project, region=plan.region, address=name).address)

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        zone = self._zone(plan, index)
        image = self._images.image(self.clients, self._architectures[instance_type])
        host_labels = labels(plan.tags(index, fingerprint))
        interface = compute_v1.NetworkInterface(
            network=f"projects/{self.project}/global/networks/{self.config.vpc_name}"
        )
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
                        source_image=image, disk_size_gb=BOOT_DISK_GB, labels=host_labels
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
        listed = compute_v1.ListAddressesRequest(
            project=self.project, region=plan.region, filter=_label_filter(plan)
        )
        for address in addresses.list(request=listed):
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

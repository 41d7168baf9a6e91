"""The aws backend: EC2 hosts in a chosen VPC and subnet behind a security group, an Elastic IP
each when public, an Application Load Balancer with the ACM certificate when `certificate: acm`."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from services.provisioner.backends.aws.clients import AwsClients, error_code, translate
from services.provisioner.backends.aws.images import UbuntuImages
from services.provisioner.backends.aws.load_balancer import (
    check_certificate,
    delete_load_balancer,
    ensure_load_balancer,
    load_balancer_subnets,
)
from services.provisioner.backends.aws.network import (
    Network,
    ensure_security_group,
    find_network,
    host_ingress,
    host_subnet,
    tag_filters,
    tag_list,
    tagged_groups,
    tcp,
)
from services.provisioner.backends.base import BackendError, HostInfo
from services.provisioner.backends.cloud import CloudHost
from services.provisioner.credentials import AWSBackendConfig
from services.provisioner.hosts.plan import (
    HTTP_PORT,
    HTTPS_PORT,
    TAG_FINGERPRINT,
    TAG_GATEWAY,
    TAG_HOST,
    GatewayPlan,
)

DEFAULT_INSTANCE_TYPE = "t3.micro"
# How long which zones offer an instance type is trusted.
OFFERINGS_SECONDS = 3600.0
# How long what `prepare` found (network, security groups) serves the rest of a pass.
PREPARED_SECONDS = 60.0
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
ROOT_VOLUME_GB = 10


@dataclass(frozen=True)
class Prepared:
    at: float
    network: Network
    host_group: str
    lb_group: str | None


class AwsDriver:
    def __init__(self, config: AWSBackendConfig) -> None:
        self.config = config
        self.clients = AwsClients(config)
        self._images = UbuntuImages()
        self._architectures: dict[tuple[str, str], str] = {}
        # (region, instance type) → when its offering was looked up, and the zones offering it.
        self._zones: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self._regions: frozenset[str] | None = None
        self._prepared: dict[str, Prepared] = {}

    def translate(self, error: Exception) -> Exception:
        return translate(error)

    def _ec2(self, plan: GatewayPlan) -> Any:
        if self._regions is None:
            # One call that checks the credentials and the region before anything is made.
            described = self.clients.ec2("us-east-1").describe_regions()["Regions"]
            self._regions = frozenset(region["RegionName"] for region in described)
        if plan.region not in self._regions:
            enabled = ", ".join(sorted(self._regions))
            raise BackendError(
                f"aws: region {plan.region} is not enabled for this account (enabled: {enabled})"
            )
        return self.clients.ec2(plan.region)

    def instance_type(self, plan: GatewayPlan) -> str:
        instance_type = plan.instance_type or DEFAULT_INSTANCE_TYPE
        key = (plan.region, instance_type)
        if key not in self._architectures:
            found = self._ec2(plan).describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
            architectures = found[0]["ProcessorInfo"]["SupportedArchitectures"]
            self._architectures[key] = "arm64" if "arm64" in architectures else "x86_64"
        self._offered_zones(plan, instance_type)
        return instance_type

    def _offered_zones(self, plan: GatewayPlan, instance_type: str) -> frozenset[str]:
        """The region's availability zones that offer the instance type (types are offered zone by zone)."""
        key = (plan.region, instance_type)
        cached = self._zones.get(key)
        if cached is None or time.monotonic() - cached[0] > OFFERINGS_SECONDS:
            pages = (
                self._ec2(plan)
                .get_paginator("describe_instance_type_offerings")
                .paginate(
                    LocationType="availability-zone",
                    Filters=[{"Name": "instance-type", "Values": [instance_type]}],
                )
            )
            zones = frozenset(offer["Location"] for page in pages for offer in page["InstanceTypeOfferings"])
            if not zones:
                raise BackendError(
                    f"aws: instance type {instance_type} is not offered in any availability zone "
                    f"of {plan.region}"
                )
            cached = (time.monotonic(), zones)
            self._zones[key] = cached
        return cached[1]

    def _network(self, plan: GatewayPlan) -> Network:
        return find_network(self._ec2(plan), self.config, plan.region)

    def _load_balancer_group(self, plan: GatewayPlan, network: Network) -> str | None:
        if plan.acm_certificate_arn is None:
            return None
        return ensure_security_group(
            self._ec2(plan),
            network,
            f"{plan.base_name}-lb",
            f"Gatehouse gateway {plan.name}: load balancer",
            plan.tags(),
            [tcp(HTTP_PORT), tcp(HTTPS_PORT)],
        )

    def _host_group(self, plan: GatewayPlan, network: Network, lb_group: str | None) -> str:
        return ensure_security_group(
            self._ec2(plan),
            network,
            plan.base_name,
            f"Gatehouse gateway {plan.name}: hosts",
            plan.tags(),
            host_ingress(plan, lb_group),
        )

    def prepare(self, plan: GatewayPlan) -> None:
        network = self._network(plan)
        if plan.acm_certificate_arn is not None:
            # Refused before anything is made: a wrong certificate or too few zones.
            if not plan.acm_certificate_arn:
                raise BackendError("aws: certificate: acm needs the certificate's arn")
            check_certificate(self.clients.acm(plan.region), plan.acm_certificate_arn)
            load_balancer_subnets(network, plan)
        host_subnet(network, plan, 0, self._offered_zones(plan, self.instance_type(plan)))
        lb_group = self._load_balancer_group(plan, network)
        host_group = self._host_group(plan, network, lb_group)
        self._prepared[plan.gateway_id] = Prepared(time.monotonic(), network, host_group, lb_group)

    def _prepared_for(self, plan: GatewayPlan) -> Prepared:
        """What this pass's `prepare` found (it runs first in every pass); again if it is old."""
        prepared = self._prepared.get(plan.gateway_id)
        if prepared is None or time.monotonic() - prepared.at > PREPARED_SECONDS:
            self.prepare(plan)
            prepared = self._prepared[plan.gateway_id]
        return prepared

    def _instances(self, plan: GatewayPlan, states: list[str]) -> list[dict[str, Any]]:
        filters = [
            *tag_filters({TAG_GATEWAY: plan.gateway_id}),
            {"Name": "instance-state-name", "Values": states},
        ]
        pages = self._ec2(plan).get_paginator("describe_instances").paginate(Filters=filters)
        return [
            instance
            for page in pages
            for reservation in page["Reservations"]
            for instance in reservation["Instances"]
        ]

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        hosts = []
        for instance in self._instances(plan, LIVE_STATES):
            tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
            state = instance["State"]["Name"]
            hosts.append(
                CloudHost(
                    index=int(tags.get(TAG_HOST, "-1")),
                    id=instance["InstanceId"],
                    fingerprint=tags.get(TAG_FINGERPRINT, ""),
                    running=state == "running",
                    public_address=instance.get("PublicIpAddress"),
                    private_address=instance.get("PrivateIpAddress"),
                    failed=state in ("stopping", "stopped"),
                    launched_at=instance["LaunchTime"].timestamp() if "LaunchTime" in instance else None,
                )
            )
        return hosts

    def console_output(self, plan: GatewayPlan, host: CloudHost) -> str | None:
        """The instance's serial console as it is now (`Latest`: Nitro instances, as hosts' types
        are), at most its last 64 KB; base64 on the wire, which botocore decodes."""
        output = self._ec2(plan).get_console_output(InstanceId=host.id, Latest=True).get("Output")
        return str(output) if output else None

    def _client_token(self, plan: GatewayPlan, index: int, fingerprint: str) -> str:
        """Makes a retried RunInstances (lost response, crash) return the instance already launched.

        Counting the slot's ended instances keeps the token new when a host must be launched again.
        """
        ended = [
            instance
            for instance in self._instances(plan, ["shutting-down", "terminated"])
            if {"Key": TAG_HOST, "Value": str(index)} in instance.get("Tags", [])
        ]
        basis = f"{plan.gateway_id}/{index}/{fingerprint}/{len(ended)}"
        return hashlib.sha256(basis.encode()).hexdigest()[:64]

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        ec2 = self._ec2(plan)
        prepared = self._prepared_for(plan)
        architecture = self._architectures[(plan.region, instance_type)]
        image_id, root_device = self._images.image(ec2, plan.region, architecture)
        tags = {"Name": plan.host_name(index), **plan.tags(index, fingerprint)}
        ec2.run_instances(
            ImageId=image_id,
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            UserData=plan.startup_script(index),
            NetworkInterfaces=[
                {
                    "DeviceIndex": 0,
                    "SubnetId": host_subnet(
                        prepared.network, plan, index, self._offered_zones(plan, instance_type)
                    ).id,
                    "Groups": [prepared.host_group],
                    # Public hosts need an address to reach the control plane before their Elastic IP.
                    "AssociatePublicIpAddress": plan.public_ip,
                    "DeleteOnTermination": True,
                }
            ],
            BlockDeviceMappings=[
                {
                    "DeviceName": root_device,
                    "Ebs": {"VolumeSize": ROOT_VOLUME_GB, "VolumeType": "gp3", "DeleteOnTermination": True},
                }
            ],
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
            TagSpecifications=[
                {"ResourceType": kind, "Tags": tag_list(tags)}
                for kind in ("instance", "volume", "network-interface")
            ],
            ClientToken=self._client_token(plan, index, fingerprint),
        )

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        ec2 = self._ec2(plan)
        if host.index >= plan.replicas:
            self._release_addresses(ec2, plan, host.index)
        ec2.terminate_instances(InstanceIds=[host.id])

    def _addresses(self, ec2: Any, plan: GatewayPlan, index: int | None = None) -> list[dict[str, Any]]:
        tags = {TAG_GATEWAY: plan.gateway_id}
        if index is not None:
            tags[TAG_HOST] = str(index)
        return list(ec2.describe_addresses(Filters=tag_filters(tags))["Addresses"])

    def _release_addresses(self, ec2: Any, plan: GatewayPlan, index: int | None = None) -> None:
        for address in self._addresses(ec2, plan, index):
            if address.get("AssociationId"):
                ec2.disassociate_address(AssociationId=address["AssociationId"])
            ec2.release_address(AllocationId=address["AllocationId"])

    def _elastic_ip(self, ec2: Any, plan: GatewayPlan, host: CloudHost) -> str:
        addresses = self._addresses(ec2, plan, host.index)
        if addresses:
            address = addresses[0]
        else:
            address = ec2.allocate_address(
                Domain="vpc",
                TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": tag_list(plan.tags(host.index))}],
            )
        if address.get("InstanceId") != host.id:
            ec2.associate_address(
                AllocationId=address["AllocationId"], InstanceId=host.id, AllowReassociation=True
            )
        return str(address["PublicIp"])

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        ec2 = self._ec2(plan)
        if plan.acm_certificate_arn is not None:
            prepared = self._prepared_for(plan)
            assert prepared.lb_group is not None
            dns_name = ensure_load_balancer(
                self.clients.elbv2(plan.region),
                prepared.network,
                plan,
                prepared.lb_group,
                [host.id for host in hosts],
            )
            return HostInfo(hostname=dns_name)
        if plan.public_ip:
            addresses = [self._elastic_ip(ec2, plan, host) for host in hosts]
            return HostInfo(hostname=addresses[0], addresses=tuple(addresses))
        return HostInfo(hostname=hosts[0].private_address or "")

    def delete_all(self, plan: GatewayPlan) -> list[str]:
        ec2 = self._ec2(plan)
        remaining = delete_load_balancer(self.clients.elbv2(plan.region), plan)
        self._release_addresses(ec2, plan)
        live = self._instances(plan, [*LIVE_STATES, "shutting-down"])
        to_stop = [
            instance["InstanceId"] for instance in live if instance["State"]["Name"] != "shutting-down"
        ]
        if to_stop:
            ec2.terminate_instances(InstanceIds=to_stop)
            live = self._instances(plan, [*LIVE_STATES, "shutting-down"])
        if live:
            remaining.append(f"{len(live)} instance{'s' if len(live) > 1 else ''} to terminate")
            return remaining
        self._delete_leftovers(ec2, plan)
        for group in tagged_groups(ec2, plan.gateway_id):
            try:
                ec2.delete_security_group(GroupId=group["GroupId"])
            except ClientError as error:
                if error_code(error) not in ("DependencyViolation", "InvalidGroup.InUse"):
                    raise
                remaining.append(f"security group {group['GroupName']}")
        return remaining

    def _delete_leftovers(self, ec2: Any, plan: GatewayPlan) -> None:
        """Volumes and network interfaces go with their instance; any left behind is removed too."""
        filters = tag_filters({TAG_GATEWAY: plan.gateway_id})
        for volume in ec2.describe_volumes(Filters=filters)["Volumes"]:
            if volume["State"] == "available":
                ec2.delete_volume(VolumeId=volume["VolumeId"])
        for interface in ec2.describe_network_interfaces(Filters=filters)["NetworkInterfaces"]:
            if interface["Status"] == "available":
                ec2.delete_network_interface(NetworkInterfaceId=interface["NetworkInterfaceId"])

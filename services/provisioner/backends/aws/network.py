"""VPC and subnet choice, and the security groups that open only the gateway's ports.

A public host goes in a subnet whose default route is an internet gateway; a private one (no public
address) only in a subnet whose default route is a NAT gateway, the only way it reaches the control
plane. A subnet routed to neither, or to a route that is a blackhole, takes no host. Hosts go only
in availability zones that offer their instance type (DescribeInstanceTypeOfferings), one zone after
another."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from services.provisioner.backends.aws.clients import error_code
from services.provisioner.backends.base import BackendError
from services.provisioner.credentials import AWSBackendConfig
from services.provisioner.hosts.plan import HTTP_PORT, HTTPS_PORT, TAG_GATEWAY, GatewayPlan

ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class Subnet:
    id: str
    zone: str
    # Its default route is an internet gateway.
    public: bool
    # Its default route is a NAT gateway: a host without a public address there reaches the outside.
    nat: bool


@dataclass(frozen=True)
class Network:
    vpc_id: str
    subnets: tuple[Subnet, ...]

    def of_kind(self, public: bool) -> list[Subnet]:
        """Subnets hosts of this kind can go in: routed to an internet gateway (public hosts) or to a
        NAT gateway (private hosts), by zone."""
        chosen = [subnet for subnet in self.subnets if (subnet.public if public else subnet.nat)]
        return sorted(chosen, key=lambda subnet: (subnet.zone, subnet.id))

    def across_zones(self, public: bool) -> list[Subnet]:
        """One subnet per availability zone (what a load balancer needs)."""
        seen: dict[str, Subnet] = {}
        for subnet in self.of_kind(public):
            seen.setdefault(subnet.zone, subnet)
        return list(seen.values())


def tag_filters(tags: dict[str, str]) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def find_network(ec2: Any, config: AWSBackendConfig, region: str) -> Network:
    vpc_id = _vpc_id(ec2, config, region)
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    main_routes: list[dict[str, Any]] = []
    routes_of: dict[str, list[dict[str, Any]]] = {}
    for table in tables:
        for association in table.get("Associations", []):
            if association.get("Main"):
                main_routes = table.get("Routes", [])
            elif association.get("SubnetId"):
                routes_of[association["SubnetId"]] = table.get("Routes", [])
    found = []
    for subnet in subnets:
        routes = routes_of.get(subnet["SubnetId"], main_routes)
        default = [
            route
            for route in routes
            if route.get("DestinationCidrBlock") == ANYWHERE and route.get("State", "active") == "active"
        ]
        internet = any(str(route.get("GatewayId", "")).startswith("igw-") for route in default)
        nat = any(route.get("NatGatewayId") for route in default)
        found.append(Subnet(subnet["SubnetId"], subnet["AvailabilityZone"], internet, nat))
    return Network(vpc_id, tuple(sorted(found, key=lambda subnet: (subnet.zone, subnet.id))))


def _vpc_id(ec2: Any, config: AWSBackendConfig, region: str) -> str:
    if config.vpc_ids and region in config.vpc_ids:
        return config.vpc_ids[region]
    if config.vpc_name:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [config.vpc_name]}])["Vpcs"]
        if not vpcs:
            raise BackendError(f"aws: no VPC named {config.vpc_name} in {region}")
        return str(vpcs[0]["VpcId"])
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise BackendError(
            f"aws: {region} has no default VPC: set vpc_name or vpc_ids in the project's aws backend"
        )
    return str(vpcs[0]["VpcId"])


def host_subnet(network: Network, plan: GatewayPlan, index: int, zones: frozenset[str]) -> Subnet:
    """Host `index`'s subnet: one per zone that offers the instance type, the zones in turn."""
    subnets = network.of_kind(plan.public_ip)
    if not subnets:
        if plan.public_ip:
            raise BackendError(
                f"aws: {network.vpc_id} has no public subnet (a default route to an internet gateway) "
                "for the gateway"
            )
        raise BackendError(
            f"aws: {network.vpc_id} has no private (no internet gateway route) subnet whose default route "
            "is a NAT gateway: a private host reaches the control plane only through one; add a NAT gateway "
            "route to a private subnet, or use public_ip: true"
        )
    per_zone: dict[str, Subnet] = {}
    for subnet in subnets:
        if subnet.zone in zones:
            per_zone.setdefault(subnet.zone, subnet)
    if not per_zone:
        kind = "public" if plan.public_ip else "NAT-routed private"
        raise BackendError(
            f"aws: the instance type is offered in {', '.join(sorted(zones))} only, where {network.vpc_id} "
            f"has no {kind} subnet; choose another instance_type or add a subnet there"
        )
    chosen = [per_zone[zone] for zone in sorted(per_zone)]
    return chosen[index % len(chosen)]


def ensure_security_group(
    ec2: Any,
    network: Network,
    name: str,
    description: str,
    tags: dict[str, str],
    ingress: list[dict[str, Any]],
) -> str:
    """The group named `name` in the VPC, with exactly `ingress` (anything else is revoked)."""
    filters = [{"Name": "vpc-id", "Values": [network.vpc_id]}, {"Name": "group-name", "Values": [name]}]
    groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    if not groups:
        try:
            ec2.create_security_group(
                GroupName=name,
                Description=description,
                VpcId=network.vpc_id,
                TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(tags)}],
            )
        except ClientError as error:
            if error_code(error) != "InvalidGroup.Duplicate":
                raise
        groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    group = groups[0]
    _sync_ingress(ec2, group, ingress)
    return str(group["GroupId"])


def _rule_keys(permissions: list[dict[str, Any]]) -> set[tuple[str, int, int, str]]:
    keys = set()
    for permission in permissions:
        base = (
            permission.get("IpProtocol", ""),
            permission.get("FromPort", -1),
            permission.get("ToPort", -1),
        )
        for ip_range in permission.get("IpRanges", []):
            keys.add((*base, ip_range["CidrIp"]))
        for pair in permission.get("UserIdGroupPairs", []):
            keys.add((*base, pair["GroupId"]))
    return keys


def _permission(key: tuple[str, int, int, str]) -> dict[str, Any]:
    protocol, from_port, to_port, source = key
    permission: dict[str, Any] = {"IpProtocol": protocol, "FromPort": from_port, "ToPort": to_port}
    if source.startswith("sg-"):
        permission["UserIdGroupPairs"] = [{"GroupId": source}]
    else:
        permission["IpRanges"] = [{"CidrIp": source}]
    return permission


def _sync_ingress(ec2: Any, group: dict[str, Any], ingress: list[dict[str, Any]]) -> None:
    have = _rule_keys(group.get("IpPermissions", []))
    want = _rule_keys(ingress)
    extra = sorted(have - want)
    missing = sorted(want - have)
    if extra:
        ec2.revoke_security_group_ingress(
            GroupId=group["GroupId"], IpPermissions=[_permission(key) for key in extra]
        )
    if missing:
        ec2.authorize_security_group_ingress(
            GroupId=group["GroupId"], IpPermissions=[_permission(key) for key in missing]
        )


def tcp(port: int, source: str = ANYWHERE) -> dict[str, Any]:
    return _permission(("tcp", port, port, source))


def host_ingress(plan: GatewayPlan, load_balancer_group: str | None) -> list[dict[str, Any]]:
    """80 and 443 and mapped ports from anywhere; behind a load balancer, 80 from it alone."""
    if load_balancer_group is None:
        return [tcp(port) for port in plan.inbound_ports]
    mapped = [port for port in plan.inbound_ports if port not in (HTTP_PORT, HTTPS_PORT)]
    return [tcp(HTTP_PORT, load_balancer_group), *(tcp(port) for port in mapped)]


def tagged_groups(ec2: Any, gateway_id: str) -> list[dict[str, Any]]:
    return list(
        ec2.describe_security_groups(Filters=tag_filters({TAG_GATEWAY: gateway_id}))["SecurityGroups"]
    )

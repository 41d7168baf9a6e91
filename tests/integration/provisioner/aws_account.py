"""An AWS account in moto shaped like a real one, and what it holds, for before/after comparisons."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.provisioner.aws_emulator import MotoServer

PRIVATE_CIDRS = (("172.31.128.0/20", "a"), ("172.31.144.0/20", "b"))


@dataclass(frozen=True)
class Account:
    """The default VPC routed to an internet gateway (as in a real account), with two private
    subnets behind a NAT gateway."""

    vpc_id: str
    public_subnets: tuple[str, ...]
    private_subnets: tuple[str, ...]


def shape_account(moto: MotoServer, region: str) -> Account:
    ec2 = moto.client("ec2")
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    public = tuple(subnet["SubnetId"] for subnet in ec2.describe_subnets()["Subnets"])
    gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc_id)
    main = ec2.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"][0]["RouteTableId"]
    ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
    elastic_ip = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=public[0], AllocationId=elastic_ip)["NatGateway"]["NatGatewayId"]
    table = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    private = []
    for cidr, zone in PRIVATE_CIDRS:
        subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=f"{region}{zone}")
        private.append(subnet["Subnet"]["SubnetId"])
        ec2.associate_route_table(RouteTableId=table, SubnetId=private[-1])
    return Account(vpc_id, public, tuple(private))


def single_zone_vpc(moto: MotoServer, region: str, name: str) -> str:
    """A VPC with one public subnet: too few zones for a load balancer."""
    ec2 = moto.client("ec2")
    vpc_id: str = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc_id], Tags=[{"Key": "Name", "Value": name}])
    gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc_id)
    table = ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.9.1.0/24", AvailabilityZone=f"{region}a")
    ec2.associate_route_table(RouteTableId=table, SubnetId=subnet["Subnet"]["SubnetId"])
    return vpc_id


def import_certificate(moto: MotoServer, domain: str) -> str:
    """An ISSUED certificate in ACM (imported, so moto does not wait for validation)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"*.{domain}")])

    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{domain}")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    imported = moto.client("acm").import_certificate(
        Certificate=certificate.public_bytes(serialization.Encoding.PEM),
        PrivateKey=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return str(imported["CertificateArn"])


def inventory(moto: MotoServer) -> dict[str, set[str]]:
    """Every resource of every type a gateway may make, by id."""
    ec2, elbv2 = moto.client("ec2"), moto.client("elbv2")
    instances = {
        instance["InstanceId"]
        for reservation in ec2.describe_instances()["Reservations"]
        for instance in reservation["Instances"]
        if instance["State"]["Name"] != "terminated"
    }
    listeners: set[str] = set()
    balancers = elbv2.describe_load_balancers()["LoadBalancers"]
    for balancer in balancers:
        found = elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
        listeners |= {listener["ListenerArn"] for listener in found}
    return {
        "instances": instances,
        "volumes": {volume["VolumeId"] for volume in ec2.describe_volumes()["Volumes"]},
        "addresses": {address["AllocationId"] for address in ec2.describe_addresses()["Addresses"]},
        "security groups": {group["GroupId"] for group in ec2.describe_security_groups()["SecurityGroups"]},
        "network interfaces": {
            interface["NetworkInterfaceId"]
            for interface in ec2.describe_network_interfaces()["NetworkInterfaces"]
        },
        "load balancers": {balancer["LoadBalancerArn"] for balancer in balancers},
        "listeners": listeners,
        "target groups": {
            group["TargetGroupArn"] for group in elbv2.describe_target_groups()["TargetGroups"]
        },
        "key pairs": {pair["KeyPairId"] for pair in ec2.describe_key_pairs()["KeyPairs"]},
        "subnets": {subnet["SubnetId"] for subnet in ec2.describe_subnets()["Subnets"]},
        "vpcs": {vpc["VpcId"] for vpc in ec2.describe_vpcs()["Vpcs"]},
        "route tables": {table["RouteTableId"] for table in ec2.describe_route_tables()["RouteTables"]},
    }


def instances_of(moto: MotoServer, gateway_id: str) -> list[dict[str, Any]]:
    ec2 = moto.client("ec2")
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:gatehouse-gateway", "Values": [gateway_id]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [instance for reservation in reservations for instance in reservation["Instances"]]

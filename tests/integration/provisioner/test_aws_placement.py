"""Where the aws backend puts hosts, against moto behind the strictness proxy: private hosts only in
subnets whose default route is a NAT gateway, every host in a zone that offers its instance type;
and what the proxy refuses that moto alone would take."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from services.provisioner.backends.aws.driver import AwsDriver
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.credentials import AWSBackendConfig
from services.provisioner.hosts.plan import XdsEndpoint
from tests.fakes.aws_strict import StrictAws
from tests.integration.provisioner.aws_account import Account, instances_of, inventory, shape_account
from tests.integration.provisioner.aws_emulator import NOBLE_CURRENT, REGION, MotoServer
from tests.integration.provisioner.harness import converge, gateway

pytestmark = pytest.mark.real

XDS = XdsEndpoint("xds.gatehouse.example", 50052)
GATEWAY_ID = "gw-0123456789ab"


@pytest.fixture
def moto(moto_server: MotoServer) -> Iterator[MotoServer]:
    moto_server.reset()
    yield moto_server
    assert moto_server.strict is not None
    moto_server.strict.vcpu_limit = None


@pytest.fixture
def strict(moto: MotoServer) -> StrictAws:
    assert moto.strict is not None
    return moto.strict


def ec2(moto: MotoServer, region: str = REGION) -> Any:
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def backend(moto: MotoServer, **extra: Any) -> CloudGatewayBackend:
    config = AWSBackendConfig.model_validate(
        {
            "type": "aws",
            "creds": {"type": "access_key", "access_key": "testing", "secret_key": "testing"},
            "endpoint_url": moto.url,
            **extra,
        }
    )
    return CloudGatewayBackend("aws", AwsDriver(config), XDS)


def isolated_subnet(moto: MotoServer, vpc_id: str, cidr: str, zone: str) -> str:
    """A private subnet whose route table has no default route at all (no NAT, no internet gateway)."""
    client = ec2(moto)
    subnet = client.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
    table = client.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    client.associate_route_table(RouteTableId=table, SubnetId=subnet)
    return str(subnet)


def zone_of(moto: MotoServer, instance: dict[str, Any], region: str = REGION) -> str:
    [subnet] = ec2(moto, region).describe_subnets(SubnetIds=[instance["SubnetId"]])["Subnets"]
    return str(subnet["AvailabilityZone"])


async def test_private_hosts_go_only_in_subnets_whose_default_route_is_a_nat_gateway(
    moto: MotoServer,
) -> None:
    account: Account = shape_account(moto, REGION)
    isolated = isolated_subnet(moto, account.vpc_id, "172.31.160.0/20", f"{REGION}c")
    await converge(backend(moto), gateway("aws", REGION, GATEWAY_ID, public_ip=False, replicas=3))
    instances = instances_of(moto, GATEWAY_ID)
    assert len(instances) == 3
    assert {instance["SubnetId"] for instance in instances} == set(account.private_subnets)
    assert isolated not in {instance["SubnetId"] for instance in instances}
    # (The proxy's findings, checked after every test, would name a host it could not route.)


async def test_a_vpc_without_a_nat_routed_subnet_refuses_private_gateways_before_making_anything(
    moto: MotoServer,
) -> None:
    client = ec2(moto)
    vpc_id = client.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    client.create_tags(Resources=[vpc_id], Tags=[{"Key": "Name", "Value": "edge"}])
    internet = client.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    client.attach_internet_gateway(InternetGatewayId=internet, VpcId=vpc_id)
    public_table = client.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"]
    client.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=internet)
    public = client.create_subnet(VpcId=vpc_id, CidrBlock="10.9.1.0/24", AvailabilityZone=f"{REGION}a")
    client.associate_route_table(RouteTableId=public_table, SubnetId=public["Subnet"]["SubnetId"])
    isolated_subnet(moto, vpc_id, "10.9.2.0/24", f"{REGION}b")
    before = inventory(moto)

    with pytest.raises(BackendError) as refused:
        await converge(backend(moto, vpc_name="edge"), gateway("aws", REGION, GATEWAY_ID, public_ip=False))
    assert str(refused.value) == (
        f"aws: {vpc_id} has no private (no internet gateway route) subnet whose default route is a NAT "
        "gateway: a private host reaches the control plane only through one; add a NAT gateway route to a "
        "private subnet, or use public_ip: true"
    )
    assert inventory(moto) == before


def shape_us_east_1(moto: MotoServer) -> None:
    """us-east-1's default VPC (a subnet in each of its six zones) routed to an internet gateway."""
    client = ec2(moto, "us-east-1")
    vpc_id = client.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    internet = client.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    client.attach_internet_gateway(InternetGatewayId=internet, VpcId=vpc_id)
    main = client.describe_route_tables(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"][0]["RouteTableId"]
    client.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=internet)


async def test_hosts_go_only_in_zones_that_offer_the_instance_type(moto: MotoServer) -> None:
    # AWS's own data (moto ships it): t3.micro is offered in every us-east-1 zone but us-east-1e.
    shape_us_east_1(moto)
    offered = ec2(moto, "us-east-1").describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": ["t3.micro"]}]
    )["InstanceTypeOfferings"]
    assert sorted(offer["Location"] for offer in offered) == [f"us-east-1{zone}" for zone in "abcdf"]

    gw = gateway("aws", "us-east-1", GATEWAY_ID, replicas=5)
    await converge(backend(moto), gw)
    reservations = ec2(moto, "us-east-1").describe_instances(
        Filters=[
            {"Name": "tag:gatehouse-gateway", "Values": [GATEWAY_ID]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )["Reservations"]
    instances = [instance for reservation in reservations for instance in reservation["Instances"]]
    assert sorted(zone_of(moto, instance, "us-east-1") for instance in instances) == [
        f"us-east-1{zone}" for zone in "abcdf"
    ]


async def test_an_instance_type_offered_in_no_zone_of_the_region_fails_in_one_line(moto: MotoServer) -> None:
    shape_account(moto, REGION)
    before = inventory(moto)
    with pytest.raises(BackendError) as refused:
        await converge(backend(moto), gateway("aws", REGION, GATEWAY_ID, instance_type="p5.48xlarge"))
    assert (
        str(refused.value)
        == "aws: instance type p5.48xlarge is not offered in any availability zone of eu-west-1"
    )
    assert inventory(moto) == before


async def test_the_vcpu_quota_fails_the_gateway_with_aws_words(moto: MotoServer, strict: StrictAws) -> None:
    shape_account(moto, REGION)
    strict.vcpu_limit = 1  # t3.micro has 2
    with pytest.raises(BackendError) as refused:
        await converge(backend(moto), gateway("aws", REGION, GATEWAY_ID))
    assert str(refused.value).startswith(
        "aws: VcpuLimitExceeded: You have requested more vCPU capacity than your current vCPU limit of 1"
    )
    assert instances_of(moto, GATEWAY_ID) == []


def test_the_proxy_refuses_what_aws_refuses_and_moto_would_take(moto: MotoServer) -> None:
    account = shape_account(moto, REGION)
    client = ec2(moto)
    launch: dict[str, Any] = {
        "ImageId": NOBLE_CURRENT,
        "InstanceType": "t3.micro",
        "MinCount": 1,
        "MaxCount": 1,
        "SubnetId": account.public_subnets[0],
    }

    def refused(call: Any, **arguments: Any) -> str:
        with pytest.raises(ClientError) as error:
            call(**arguments)
        return f"{error.value.response['Error']['Code']}: {error.value.response['Error']['Message']}"

    assert refused(client.run_instances, **launch, UserData="x" * (16 * 1024 + 1)) == (
        "InvalidParameterValue: User data is limited to 16384 bytes"
    )
    tagged = [{"ResourceType": "instance", "Tags": [{"Key": "aws:gatehouse", "Value": "x"}]}]
    assert refused(client.run_instances, **launch, TagSpecifications=tagged).startswith(
        "InvalidParameterValue: Value ( aws:gatehouse ) for parameter key is invalid."
    )
    assert refused(client.run_instances, **launch, ClientToken="x" * 65).startswith("InvalidParameterValue: ")
    assert refused(
        client.create_security_group, GroupName="sg-gatehouse", Description="x", VpcId=account.vpc_id
    ).startswith("InvalidParameterValue: ")
    elbv2 = moto.client("elbv2")
    assert refused(
        elbv2.create_target_group,
        Name="gatehouse-" + "x" * 30,
        Protocol="HTTP",
        Port=80,
        VpcId=account.vpc_id,
    ).startswith("ValidationError: Target group name 'gatehouse-")
    assert refused(
        elbv2.add_tags, ResourceArns=["arn:aws:elasticloadbalancing:x"], Tags=[{"Key": "a<b", "Value": "c"}]
    ).startswith("ValidationError: Value 'a<b' at 'Tags.1.Key' failed to satisfy constraint")
    # And a zone not offering the type is refused as EC2 refuses it.
    shape_us_east_1(moto)
    east = ec2(moto, "us-east-1")
    [subnet_e] = east.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1e"]}])[
        "Subnets"
    ]
    assert refused(east.run_instances, **{**launch, "SubnetId": subnet_e["SubnetId"]}).startswith(
        "Unsupported: Your requested instance type (t3.micro) is not supported in your requested "
        "Availability Zone (us-east-1e)."
    )

"""The aws backend against moto_server: what it makes, what it leaves (nothing), and how it recovers."""

from __future__ import annotations

import base64
import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatehouse.v1 import resources_pb2
from services.common.internal_ca import InternalCA
from services.provisioner.backends.aws.driver import AwsDriver
from services.provisioner.backends.base import BackendError, NotReady
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.credentials import AWSBackendConfig
from services.provisioner.hosts import limits
from services.provisioner.hosts.identity import JOIN_TOKEN_PATH, JoinEndpoint
from services.provisioner.hosts.plan import XdsEndpoint
from services.provisioner.hosts.startup import unpack_startup_script
from services.provisioner.join import JoinSetup
from tests.integration.provisioner.aws_account import (
    Account,
    import_certificate,
    instances_of,
    inventory,
    shape_account,
    single_zone_vpc,
)
from tests.integration.provisioner.aws_emulator import NOBLE_CURRENT, REGION, MotoServer, start_moto
from tests.integration.provisioner.harness import converge, delete_fully, gateway
from tests.integration.provisioner.overdue import never_connecting
from tests.support.join_tokens import local_join_tokens

pytestmark = pytest.mark.real

XDS = XdsEndpoint("xds.gatehouse.example", 50052)
GATEWAY_ID = "gw-0123456789ab"


@dataclass
class Aws:
    moto: MotoServer
    account: Account
    ports: dict[str, frozenset[int]]
    # mTLS to gateway_xds, as in production: each host's user data carries a join token.
    join: JoinSetup

    def config(self, **extra: Any) -> AWSBackendConfig:
        raw = {
            "type": "aws",
            "creds": {"type": "access_key", "access_key": "testing", "secret_key": "testing"},
            "endpoint_url": self.moto.url,
            **extra,
        }
        return AWSBackendConfig.model_validate(raw)

    def backend(self, **extra: Any) -> CloudGatewayBackend:
        return CloudGatewayBackend("aws", AwsDriver(self.config(**extra)), XDS, self.mapped, self.join)

    def mapped(self, gateway_id: str) -> frozenset[int]:
        return self.ports.get(gateway_id, frozenset())

    @property
    def ec2(self) -> Any:
        return self.moto.client("ec2")

    @property
    def elbv2(self) -> Any:
        return self.moto.client("elbv2")


@pytest.fixture
def aws(moto_server: MotoServer, tmp_path: Path) -> Aws:
    moto_server.reset()
    ca = InternalCA.create()
    join = JoinSetup(
        local_join_tokens(),
        JoinEndpoint("https://xds.gatehouse.example:50055", ca.certificate_pem.decode()),
    )
    return Aws(moto_server, shape_account(moto_server, REGION), {}, join)


def ingress(ec2: Any, group_id: str) -> set[tuple[int, str]]:
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return {
        (rule["FromPort"], source)
        for rule in group["IpPermissions"]
        for source in [r["CidrIp"] for r in rule.get("IpRanges", [])]
        + [p["GroupId"] for p in rule.get("UserIdGroupPairs", [])]
    }


def user_data(ec2: Any, instance_id: str) -> str:
    attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attribute["UserData"]["Value"]).decode()


async def test_a_public_gateway_is_one_small_ubuntu_host_with_an_elastic_ip_and_only_80_and_443(
    aws: Aws,
) -> None:
    gw = gateway("aws", REGION, GATEWAY_ID, domain="example.com")
    host = await converge(aws.backend(), gw)

    [instance] = instances_of(aws.moto, GATEWAY_ID)
    assert instance["InstanceType"] == "t3.micro"
    assert instance["ImageId"] == NOBLE_CURRENT
    assert instance["SubnetId"] in aws.account.public_subnets
    assert "KeyName" not in instance
    tags = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}
    assert tags["gatehouse-gateway"] == GATEWAY_ID and tags["gatehouse-host"] == "0"
    [address] = aws.ec2.describe_addresses(
        Filters=[{"Name": "instance-id", "Values": [instance["InstanceId"]]}]
    )["Addresses"]
    assert host.hostname == address["PublicIp"]
    assert (host.listen_address, host.http_port, host.https_port) == ("0.0.0.0", 80, 443)
    [group] = instance["NetworkInterfaces"][0]["Groups"]
    assert ingress(aws.ec2, group["GroupId"]) == {(80, "0.0.0.0/0"), (443, "0.0.0.0/0")}
    # The startup data (under EC2's limit with mTLS) carries the script with the host's own token.
    data = user_data(aws.ec2, instance["InstanceId"])
    assert len(data.encode()) <= limits.EC2_USER_DATA_BYTES
    script = unpack_startup_script(data)
    assert aws.join.endpoint.url in script and f"gateway/{GATEWAY_ID}/0" in script
    token = script.split(f"\"$root{JOIN_TOKEN_PATH}\" <<'GATEHOUSE_FILE'\n")[1].split("\n")[0]
    assert (await aws.join.tokens.redeem(token)).host_index == 0
    volumes = aws.ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance["InstanceId"]]}]
    )
    assert {tag["Key"]: tag["Value"] for tag in volumes["Volumes"][0]["Tags"]}[
        "gatehouse-gateway"
    ] == GATEWAY_ID

    # Reconciling a settled gateway changes nothing.
    before = inventory(aws.moto)
    assert await converge(aws.backend(), gw) == host
    assert inventory(aws.moto) == before


async def test_a_private_gateway_gets_a_private_subnet_and_address_and_no_public_one(aws: Aws) -> None:
    gw = gateway("aws", REGION, GATEWAY_ID, domain="example.com", public_ip=False)
    host = await converge(aws.backend(), gw)

    [instance] = instances_of(aws.moto, GATEWAY_ID)
    assert instance["SubnetId"] in aws.account.private_subnets
    assert "PublicIpAddress" not in instance
    assert host.hostname == instance["PrivateIpAddress"]
    assert (
        aws.ec2.describe_addresses(Filters=[{"Name": "tag:gatehouse-gateway", "Values": [GATEWAY_ID]}])[
            "Addresses"
        ]
        == []
    )


async def test_a_private_gateway_in_a_vpc_without_private_subnets_fails_clearly(aws: Aws) -> None:
    single_zone_vpc(aws.moto, REGION, "edge")
    gw = gateway("aws", REGION, GATEWAY_ID, public_ip=False)
    with pytest.raises(
        BackendError, match=r"^aws: vpc-\w+ has no private \(no internet gateway route\) subnet"
    ):
        await converge(aws.backend(vpc_name="edge"), gw)
    assert instances_of(aws.moto, GATEWAY_ID) == []


async def test_instance_type_goes_larger_and_an_unknown_one_fails_in_one_line(aws: Aws) -> None:
    await converge(aws.backend(), gateway("aws", REGION, GATEWAY_ID, instance_type="t3.large"))
    assert [i["InstanceType"] for i in instances_of(aws.moto, GATEWAY_ID)] == ["t3.large"]

    with pytest.raises(BackendError) as failure:
        await converge(aws.backend(), gateway("aws", REGION, "gw-bbbbbbbbbbbb", instance_type="t9.huge"))
    assert str(failure.value).startswith("aws: InvalidInstanceType: ") and "\n" not in str(failure.value)


async def test_acm_puts_an_application_load_balancer_across_two_zones_in_front(aws: Aws) -> None:
    arn = import_certificate(aws.moto, "example.com")
    certificate = resources_pb2.Certificate(type="acm", arn=arn)
    gw = gateway("aws", REGION, GATEWAY_ID, domain="example.com", certificate=certificate, replicas=2)
    host = await converge(aws.backend(), gw)

    [balancer] = aws.elbv2.describe_load_balancers(Names=[f"gatehouse-{GATEWAY_ID}"])["LoadBalancers"]
    assert host.hostname == balancer["DNSName"]
    assert balancer["Scheme"] == "internet-facing" and balancer["Type"] == "application"
    assert len({zone["ZoneName"] for zone in balancer["AvailabilityZones"]}) >= 2
    listeners = {
        listener["Port"]: listener
        for listener in aws.elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    }
    assert set(listeners) == {80, 443}
    assert listeners[443]["Protocol"] == "HTTPS"
    assert [c["CertificateArn"] for c in listeners[443]["Certificates"]] == [arn]
    [group] = aws.elbv2.describe_target_groups(LoadBalancerArn=balancer["LoadBalancerArn"])["TargetGroups"]
    assert listeners[443]["DefaultActions"][0]["TargetGroupArn"] == group["TargetGroupArn"]
    redirect = listeners[80]["DefaultActions"][0]
    assert redirect["Type"] == "redirect"
    assert (redirect["RedirectConfig"]["Protocol"], redirect["RedirectConfig"]["Port"]) == ("HTTPS", "443")
    targets = aws.elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])[
        "TargetHealthDescriptions"
    ]
    instances = instances_of(aws.moto, GATEWAY_ID)
    assert {t["Target"]["Id"] for t in targets} == {i["InstanceId"] for i in instances}
    # Hosts take HTTP from the load balancer only; TLS ends there. No Elastic IPs.
    [balancer_group] = balancer["SecurityGroups"]
    assert ingress(aws.ec2, balancer_group) == {(80, "0.0.0.0/0"), (443, "0.0.0.0/0")}
    assert ingress(aws.ec2, instances[0]["NetworkInterfaces"][0]["Groups"][0]["GroupId"]) == {
        (80, balancer_group)
    }
    assert (
        aws.ec2.describe_addresses(Filters=[{"Name": "tag:gatehouse-gateway", "Values": [GATEWAY_ID]}])[
            "Addresses"
        ]
        == []
    )


async def test_acm_without_two_zones_or_with_an_unknown_certificate_fails_before_making_anything(
    aws: Aws,
) -> None:
    single_zone_vpc(aws.moto, REGION, "edge")
    before = inventory(aws.moto)
    arn = import_certificate(aws.moto, "example.com")
    certificate = resources_pb2.Certificate(type="acm", arn=arn)
    with pytest.raises(BackendError, match="at least two public subnets in different availability zones"):
        await converge(
            aws.backend(vpc_name="edge"), gateway("aws", REGION, GATEWAY_ID, certificate=certificate)
        )
    missing = resources_pb2.Certificate(type="acm", arn=arn.replace(arn[-8:], "00000000"))
    with pytest.raises(BackendError, match="not found"):
        await converge(aws.backend(), gateway("aws", REGION, GATEWAY_ID, certificate=missing))
    assert inventory(aws.moto) == before


async def test_replicas_run_that_many_hosts_across_zones_and_scaling_down_removes_the_rest(aws: Aws) -> None:
    gw = gateway("aws", REGION, GATEWAY_ID, replicas=3)
    await converge(aws.backend(), gw)
    instances = instances_of(aws.moto, GATEWAY_ID)
    indices = sorted({tag["Key"]: tag["Value"] for tag in i["Tags"]}["gatehouse-host"] for i in instances)
    assert indices == ["0", "1", "2"]
    assert len({i["Placement"]["AvailabilityZone"] for i in instances}) == 3
    for instance in instances:
        index = {tag["Key"]: tag["Value"] for tag in instance["Tags"]}["gatehouse-host"]
        data = unpack_startup_script(user_data(aws.ec2, instance["InstanceId"]))
        named = {n for n in ("0", "1", "2") if f"gateway/{GATEWAY_ID}/{n}" in data}
        assert named == {index}  # each host's bootstrap is its own node
    addresses = aws.ec2.describe_addresses(
        Filters=[{"Name": "tag:gatehouse-gateway", "Values": [GATEWAY_ID]}]
    )
    assert len(addresses["Addresses"]) == 3

    gw.spec.replicas = 1
    await converge(aws.backend(), gw)
    [left] = instances_of(aws.moto, GATEWAY_ID)
    assert {tag["Key"]: tag["Value"] for tag in left["Tags"]}["gatehouse-host"] == "0"
    addresses = aws.ec2.describe_addresses(
        Filters=[{"Name": "tag:gatehouse-gateway", "Values": [GATEWAY_ID]}]
    )
    assert [a["InstanceId"] for a in addresses["Addresses"]] == [left["InstanceId"]]


@pytest.mark.parametrize("acm", [False, True], ids=["elastic-ips", "load-balancer"])
async def test_delete_leaves_nothing_behind(aws: Aws, acm: bool) -> None:
    arn = import_certificate(aws.moto, "example.com")
    before = inventory(aws.moto)
    certificate = resources_pb2.Certificate(type="acm", arn=arn) if acm else None
    gw = gateway("aws", REGION, GATEWAY_ID, certificate=certificate, replicas=2)
    aws.ports[GATEWAY_ID] = frozenset({5001})
    await converge(aws.backend(), gw)
    assert inventory(aws.moto) != before

    await delete_fully(aws.backend(), gw)
    after = inventory(aws.moto)
    assert {kind: after[kind] - before[kind] for kind in after} == {kind: set() for kind in after}
    await delete_fully(aws.backend(), gw)  # deleting again is harmless


class Crash(Exception):
    pass


class CrashAfterLaunch:
    """The process dies right after the cloud accepted a launch, before anything else is written."""

    def __init__(self, driver: AwsDriver) -> None:
        self._driver = driver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)

    def create_host(self, *args: Any) -> None:
        self._driver.create_host(*args)
        raise Crash


async def test_a_crash_after_launching_and_a_restart_leave_exactly_one_instance_per_host(aws: Aws) -> None:
    gw = gateway("aws", REGION, GATEWAY_ID, replicas=2)
    crashing = CloudGatewayBackend("aws", CrashAfterLaunch(AwsDriver(aws.config())), XDS, join=aws.join)
    with pytest.raises(Crash):
        await crashing.create_or_update(gw)
    # A new process: nothing remembered, everything found again by the gateway's tag.
    await converge(aws.backend(), gw)
    await converge(aws.backend(), gw)
    hosts = [
        {tag["Key"]: tag["Value"] for tag in i["Tags"]}["gatehouse-host"]
        for i in instances_of(aws.moto, GATEWAY_ID)
    ]
    assert sorted(hosts) == ["0", "1"]


async def test_ports_services_map_are_opened_and_closed_with_them(aws: Aws) -> None:
    gw = gateway("aws", REGION, GATEWAY_ID)
    aws.ports[GATEWAY_ID] = frozenset({5001, 8080})
    await converge(aws.backend(), gw)
    [instance] = instances_of(aws.moto, GATEWAY_ID)
    group = instance["NetworkInterfaces"][0]["Groups"][0]["GroupId"]
    assert {port for port, _ in ingress(aws.ec2, group)} == {80, 443, 5001, 8080}
    aws.ports[GATEWAY_ID] = frozenset({8080})
    await converge(aws.backend(), gw)
    assert {port for port, _ in ingress(aws.ec2, group)} == {80, 443, 8080}
    assert [i["InstanceId"] for i in instances_of(aws.moto, GATEWAY_ID)] == [instance["InstanceId"]]


async def test_a_host_lost_outside_gatehouse_is_replaced_and_a_new_size_rolls_host_by_host(aws: Aws) -> None:
    gw = gateway("aws", REGION, GATEWAY_ID, replicas=2)
    backend = aws.backend()
    host = await converge(backend, gw)
    [first, second] = sorted(instances_of(aws.moto, GATEWAY_ID), key=lambda i: i["InstanceId"])
    aws.ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    aws.ec2.stop_instances(InstanceIds=[second["InstanceId"]])
    await converge(backend, gw)
    now = instances_of(aws.moto, GATEWAY_ID)
    assert len(now) == 2 and not {i["InstanceId"] for i in now} & {first["InstanceId"], second["InstanceId"]}
    # The replacements took over their slots' Elastic IPs: the gateway's address did not change.
    assert dataclasses.replace(await converge(backend, gw), hosts=()) == dataclasses.replace(host, hosts=())

    gw.spec.instance_type = "t3.small"
    plan = backend.plan(gw)
    old = {host.fingerprint for host in backend.driver.hosts(plan)}
    old_left: list[int] = []
    for _ in range(10):
        old_left.append(sum(host.fingerprint in old for host in backend.driver.hosts(plan)))
        try:
            backend.ensure(plan)
            break
        except NotReady:
            continue
    old_left.append(sum(host.fingerprint in old for host in backend.driver.hosts(plan)))
    assert [i["InstanceType"] for i in instances_of(aws.moto, GATEWAY_ID)] == ["t3.small", "t3.small"]
    # One host at a time: the other keeps serving while each is rebuilt.
    assert old_left[0] == 2 and 1 in old_left and old_left[-1] == 0
    assert all(a - b <= 1 for a, b in itertools.pairwise(old_left))


async def test_an_unknown_region_fails_in_one_line(aws: Aws) -> None:
    with pytest.raises(BackendError, match=r"^aws: region mars-north-1 is not enabled for this account"):
        await converge(aws.backend(), gateway("aws", "mars-north-1", GATEWAY_ID))


@pytest.fixture(scope="module")
def moto_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from start_moto(tmp_path_factory.mktemp("moto-auth"), {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})


async def test_wrong_credentials_fail_the_gateway_with_the_clouds_message_in_one_line(
    moto_with_auth: MotoServer,
) -> None:
    config = AWSBackendConfig.model_validate(
        {
            "type": "aws",
            "creds": {"type": "access_key", "access_key": "AKIAWRONGWRONGWRONG0", "secret_key": "nope"},
            "endpoint_url": moto_with_auth.url,
        }
    )
    backend = CloudGatewayBackend("aws", AwsDriver(config), XDS)
    with pytest.raises(BackendError) as failure:
        await converge(backend, gateway("aws", REGION, GATEWAY_ID))
    message = str(failure.value)
    assert message.startswith("aws: AuthFailure: ") and "\n" not in message, message


async def test_a_host_whose_envoy_never_connects_is_replaced_with_its_console_shown(aws: Aws) -> None:
    gw = gateway("aws", REGION, GATEWAY_ID)
    backend = aws.backend()
    await converge(backend, gw)
    [instance] = instances_of(aws.moto, GATEWAY_ID)
    assert aws.moto.strict is not None
    aws.moto.strict.consoles[instance["InstanceId"]] = (
        "cloud-init: running the startup script\n"
        "gatehouse: joining at https://xds.gatehouse.example:50055\n"
        "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 1234 (unattended-upgr)\n"
    )
    replaced = await never_connecting(backend, gw)
    # Its launch time is EC2's LaunchTime, so the deadline held across a provisioner restart.
    assert replaced.hosts[0].launched_at == instance["LaunchTime"].timestamp()
    assert "Could not get lock /var/lib/dpkg/lock-frontend" in replaced.message
    assert replaced.message.startswith("host 0's Envoy did not connect within 600s: cloud-init:")
    assert instances_of(aws.moto, GATEWAY_ID) == []

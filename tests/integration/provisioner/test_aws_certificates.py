"""The certificates service's AWS parts against moto: Route 53 as the DNS-01 provider, and the ACM
check of `certificate: {type: acm, arn}`."""

from __future__ import annotations

import secrets

import pytest

from gatehouse.v1 import resources_pb2
from services.certificates.issuers.acm import AcmChecker
from services.certificates.issuers.base import IssueError
from services.certificates.route53 import Route53Provider
from tests.integration.provisioner.aws_account import import_certificate
from tests.integration.provisioner.aws_emulator import MotoServer

pytestmark = pytest.mark.real


def _txt_records(moto: MotoServer, zone_id: str, name: str) -> list[str]:
    records = moto.client("route53").list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return [
        value["Value"]
        for record in records
        if record["Type"] == "TXT" and record["Name"] == name
        for value in record["ResourceRecords"]
    ]


async def test_route53_sets_and_removes_the_challenge_record(moto_server: MotoServer) -> None:
    domain = f"{secrets.token_hex(4)}.example.org"
    zone = moto_server.client("route53").create_hosted_zone(
        Name=f"{domain}.", CallerReference=secrets.token_hex(8)
    )
    zone_id = zone["HostedZone"]["Id"]
    provider = Route53Provider(client=moto_server.client("route53"))
    await provider.set_txt(f"_acme-challenge.{domain}", "validation-value")
    assert _txt_records(moto_server, zone_id, f"_acme-challenge.{domain}.") == ['"validation-value"']
    await provider.remove_txt(f"_acme-challenge.{domain}", "validation-value")
    assert _txt_records(moto_server, zone_id, f"_acme-challenge.{domain}.") == []
    with pytest.raises(IssueError, match=r"no Route 53 hosted zone holds _acme-challenge\.nowhere\.test"):
        await provider.set_txt("_acme-challenge.nowhere.test", "x")


def _acm_gateway(domain: str, arn: str) -> resources_pb2.Gateway:
    gateway = resources_pb2.Gateway(name="alb-gw")
    gateway.spec.domain = domain
    gateway.spec.region = "eu-west-1"
    gateway.spec.certificate.type = "acm"
    gateway.spec.certificate.arn = arn
    return gateway


async def test_the_acm_check_wants_an_issued_certificate_for_the_wildcard(moto_server: MotoServer) -> None:
    checker = AcmChecker(client_factory=lambda region: moto_server.client("acm"))
    arn = import_certificate(moto_server, "shop.example.com")
    message = await checker.check(_acm_gateway("shop.example.com", arn))
    assert message.endswith("is ISSUED and covers *.shop.example.com; TLS ends at the load balancer")
    with pytest.raises(IssueError, match=r"covers \*\.shop\.example\.com, not \*\.other\.example\.com"):
        await checker.check(_acm_gateway("other.example.com", arn))
    missing = arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    with pytest.raises(IssueError, match="ACM certificate"):
        await checker.check(_acm_gateway("shop.example.com", missing))

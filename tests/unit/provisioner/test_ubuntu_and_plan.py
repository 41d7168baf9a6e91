"""The newest Ubuntu LTS out of what a cloud lists, and the plan every cloud backend builds on."""

from __future__ import annotations

from typing import Any

from gatehouse.v1 import resources_pb2
from services.provisioner.hosts.plan import TAG_GATEWAY, TAG_HOST, GatewayPlan, XdsEndpoint
from services.provisioner.hosts.ubuntu import lts_release, newest_lts


def test_lts_releases_are_april_releases_of_even_years_however_spelt() -> None:
    assert lts_release("ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250115") == (24, 4)
    assert lts_release("ubuntu-2404-lts-amd64") == (24, 4)
    assert lts_release("ubuntu-26_04-lts") == (26, 4)
    assert lts_release("ubuntu/images/hvm-ssd/ubuntu-oracular-24.10-amd64-server-20241009") is None
    assert lts_release("ubuntu-2304-amd64") is None
    assert lts_release("0001-com-ubuntu-server-jammy") is None


def test_the_newest_lts_wins_then_the_newest_build() -> None:
    names = [
        "ubuntu-jammy-22.04-amd64-server-20250301",
        "ubuntu-noble-24.04-amd64-server-20241001",
        "ubuntu-noble-24.04-amd64-server-20250115",
        "ubuntu-plucky-25.04-amd64-server-20250601",
        "ubuntu-questing-25.10-amd64-server-20251101",
    ]
    assert newest_lts(names, name=str, built=str) == "ubuntu-noble-24.04-amd64-server-20250115"
    assert newest_lts(["ubuntu-2604-lts-amd64", *names], name=str) == "ubuntu-2604-lts-amd64"
    assert newest_lts(["windows-2022"], name=str) is None


def gateway(**spec: Any) -> resources_pb2.Gateway:
    fields: dict[str, Any] = {"backend": "gcp", "region": "europe-west4", "public_ip": True, "replicas": 2}
    fields.update(spec)
    message = resources_pb2.GatewaySpec(**fields)
    message.tags["team"] = "edge"
    return resources_pb2.Gateway(id="gw-0123456789ab", project="main", name="edge", spec=message)


def test_the_plan_names_and_tags_every_resource_by_the_gateway() -> None:
    plan = GatewayPlan.of(gateway(), XdsEndpoint("xds.example.com", 50052), frozenset({5001}))
    assert plan.base_name == "gatehouse-gw-0123456789ab"
    assert plan.host_name(1) == "gatehouse-gw-0123456789ab-1"
    assert plan.inbound_ports == (80, 443, 5001)
    tags = plan.tags(1, "abc")
    assert tags["team"] == "edge" and tags[TAG_GATEWAY] == "gw-0123456789ab" and tags[TAG_HOST] == "1"
    assert plan.bootstrap(1)["node"]["id"] == "gateway/gw-0123456789ab/1"
    assert plan.acm_certificate_arn is None


def test_the_users_tags_cannot_hide_a_resource_from_its_gateway() -> None:
    gw = gateway()
    gw.spec.tags[TAG_GATEWAY] = "gw-someone-else"
    assert GatewayPlan.of(gw, XdsEndpoint("x", 1)).tags()[TAG_GATEWAY] == "gw-0123456789ab"


def test_a_host_is_replaced_when_its_size_addressing_or_control_plane_changes_only() -> None:
    xds = XdsEndpoint("xds.example.com", 50052)
    plan = GatewayPlan.of(gateway(), xds)
    same = plan.host_fingerprint("e2-small")
    assert GatewayPlan.of(gateway(replicas=5), xds, frozenset({8080})).host_fingerprint("e2-small") == same
    assert plan.host_fingerprint("e2-medium") != same
    assert GatewayPlan.of(gateway(public_ip=False), xds).host_fingerprint("e2-small") != same
    assert (
        GatewayPlan.of(gateway(), XdsEndpoint("xds.example.com", 50053)).host_fingerprint("e2-small") != same
    )


def test_acm_carries_its_certificate() -> None:
    gw = gateway(
        certificate=resources_pb2.Certificate(type="acm", arn="arn:aws:acm:eu-west-1:1:certificate/x")
    )
    assert (
        GatewayPlan.of(gw, XdsEndpoint("x", 1)).acm_certificate_arn == "arn:aws:acm:eu-west-1:1:certificate/x"
    )
    gw = gateway(certificate=resources_pb2.Certificate(type="lets-encrypt"))
    assert GatewayPlan.of(gw, XdsEndpoint("x", 1)).acm_certificate_arn is None

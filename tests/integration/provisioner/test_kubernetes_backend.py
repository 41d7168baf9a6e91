"""The kubernetes backend: the real kubernetes client (37.x, pydantic models) against a wire-level
fake API server that also plays the controllers and the cloud's load balancer provider."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from gatehouse.v1 import resources_pb2
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.backends.kubernetes.driver import KubernetesDriver
from services.provisioner.credentials import KubernetesBackendConfig
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from services.provisioner.hosts.startup import ENVOY_IMAGE
from tests.fakes.kubernetes_api import FakeKubernetes
from tests.integration.provisioner.harness import converge, delete_fully, gateway

GATEWAY_ID = "gw-0123456789ab"
NAMESPACE = f"gatehouse-{GATEWAY_ID}"
XDS = XdsEndpoint("xds.gatehouse.example", 50052)


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes().serve() as fake:
        yield fake


def backend(
    cluster: FakeKubernetes, ports: frozenset[int] = frozenset(), token: str | None = None
) -> CloudGatewayBackend:
    config = KubernetesBackendConfig.model_validate(
        {"type": "kubernetes", "kubeconfig": {"data": cluster.kubeconfig(token)}}
    )
    return CloudGatewayBackend("kubernetes", KubernetesDriver(config), XDS, lambda _: ports)


async def test_a_gateway_is_envoy_deployments_behind_a_load_balancer_service(cluster: FakeKubernetes) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID, domain="example.com", replicas=2)
    host = await converge(backend(cluster), gw)

    [namespace] = cluster.of("namespaces")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["gatehouse-gateway"] == GATEWAY_ID
    [service] = cluster.of("services", NAMESPACE)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"] == {"gatehouse-gateway": GATEWAY_ID}
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {(80, 8080), (443, 8443)}
    assert host.hostname == service["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert (host.http_port, host.https_port) == (8080, 8443)

    deployments = sorted(cluster.of("deployments", NAMESPACE), key=lambda d: d["metadata"]["name"])
    assert [d["metadata"]["name"] for d in deployments] == ["envoy-0", "envoy-1"]
    plan = GatewayPlan.of(gw, XDS)
    for index, deployment in enumerate(deployments):
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == ENVOY_IMAGE
        assert container["args"][:2] == ["-c", "/etc/gatehouse/envoy.json"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        [secret] = [s for s in cluster.of("secrets", NAMESPACE) if s["metadata"]["name"] == f"envoy-{index}"]
        assert pod["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]
        bootstrap = json.loads(base64.b64decode(secret["data"]["envoy.json"]))
        assert bootstrap == plan.bootstrap(index)
        assert bootstrap["node"]["id"] == f"gateway/{GATEWAY_ID}/{index}"

    before = cluster.inventory()
    assert await converge(backend(cluster), gw) == host
    assert cluster.inventory() == before


async def test_a_load_balancer_hostname_is_the_gateways_hostname(cluster: FakeKubernetes) -> None:
    cluster.load_balancer = "hostname"
    host = await converge(backend(cluster), gateway("kubernetes", "any", GATEWAY_ID))
    assert host.hostname.endswith(".elb.eu-west-1.amazonaws.com")


async def test_without_a_load_balancer_provider_the_gateway_waits_and_says_why(
    cluster: FakeKubernetes,
) -> None:
    cluster.load_balancer = None
    # The hosts run; the gateway stays provisioning with the reason shown beside it.
    with pytest.raises(AssertionError, match="waiting for the load balancer's address"):
        await converge(backend(cluster), gateway("kubernetes", "any", GATEWAY_ID))
    assert len(cluster.of("deployments", NAMESPACE)) == 1


async def test_mapped_ports_are_added_to_the_service_and_scaling_down_removes_hosts(
    cluster: FakeKubernetes,
) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID, replicas=3)
    await converge(backend(cluster, frozenset({5001})), gw)
    [service] = cluster.of("services", NAMESPACE)
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        (80, 8080),
        (443, 8443),
        (5001, 5001),
    }
    gw.spec.replicas = 1
    await converge(backend(cluster), gw)
    assert [d["metadata"]["name"] for d in cluster.of("deployments", NAMESPACE)] == ["envoy-0"]
    assert [s["metadata"]["name"] for s in cluster.of("secrets", NAMESPACE)] == ["envoy-0"]
    [service] = cluster.of("services", NAMESPACE)
    assert {p["port"] for p in service["spec"]["ports"]} == {80, 443}


async def test_delete_removes_the_namespace_and_everything_in_it(cluster: FakeKubernetes) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID, replicas=2)
    await converge(backend(cluster), gw)
    await delete_fully(backend(cluster), gw)
    assert cluster.inventory() == {
        "namespaces": set(),
        "secrets": set(),
        "services": set(),
        "deployments": set(),
    }
    await delete_fully(backend(cluster), gw)


async def test_a_crash_after_creating_a_host_and_a_restart_leave_one_deployment(
    cluster: FakeKubernetes,
) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID)
    crashed = backend(cluster)
    plan = crashed.plan(gw)
    crashed.driver.prepare(plan)
    crashed.driver.create_host(plan, 0, "pod", plan.host_fingerprint("pod"))
    crashed.driver.create_host(plan, 0, "pod", plan.host_fingerprint("pod"))  # a retry whose answer was lost
    await converge(backend(cluster), gw)
    assert len(cluster.of("deployments", NAMESPACE)) == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"instance_type": "m5.large"}, "instance_type cannot be set"),
        ({"public_ip": False}, "private gateways"),
        ({"certificate": resources_pb2.Certificate(type="acm", arn="arn:aws:acm:x")}, "certificate: acm"),
    ],
)
async def test_what_kubernetes_cannot_do_is_refused(
    cluster: FakeKubernetes, spec: dict[str, object], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        await converge(backend(cluster), gateway("kubernetes", "any", GATEWAY_ID, **spec))  # type: ignore[arg-type]
    assert cluster.of("namespaces") == []


async def test_quota_and_wrong_credentials_fail_in_one_line_with_the_clusters_words(
    cluster: FakeKubernetes,
) -> None:
    with pytest.raises(BackendError, match=r"^kubernetes: Unauthorized$"):
        await converge(backend(cluster, token="wrong"), gateway("kubernetes", "any", GATEWAY_ID))
    cluster.load_balancer_quota = 0
    with pytest.raises(BackendError, match=r'^kubernetes: services "gateway" is forbidden: exceeded quota'):
        await converge(backend(cluster), gateway("kubernetes", "any", GATEWAY_ID))

"""The kubernetes backend: the real kubernetes client (37.x, pydantic models) against a wire-level
fake API server that also plays the controllers and the cloud's load balancer provider."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from gatehouse.envoy_bootstrap import ADMIN_SOCKET_DIR
from gatehouse.v1 import resources_pb2
from services.common.internal_ca import InternalCA
from services.provisioner.backends.base import BackendError, NotReady
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.backends.kubernetes import manifests
from services.provisioner.backends.kubernetes.driver import KubernetesDriver
from services.provisioner.credentials import KubernetesBackendConfig
from services.provisioner.hosts.identity import JoinEndpoint
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from services.provisioner.hosts.startup import ENVOY_IMAGE
from services.provisioner.join import JoinSetup
from tests.fakes.kubernetes_api import PROVISIONER_ROLE, FakeKubernetes
from tests.fakes.kubernetes_rules import Rule, restricted_violations
from tests.integration.provisioner.harness import converge, delete_fully, gateway
from tests.integration.provisioner.overdue import never_connecting
from tests.support.join_tokens import local_join_tokens

GATEWAY_ID = "gw-0123456789ab"
# The fake cluster's namespace where the provisioner's Role is (Pod Security "restricted" enforced).
NAMESPACE = "gatehouse"
SERVICE = f"gatehouse-{GATEWAY_ID}"
XDS = XdsEndpoint("xds.gatehouse.example", 50052)


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes().serve() as fake:
        yield fake


def backend(
    cluster: FakeKubernetes,
    ports: frozenset[int] = frozenset(),
    token: str | None = None,
    join: JoinSetup | None = None,
    namespace: str | None = NAMESPACE,
    context_namespace: str | None = None,
) -> CloudGatewayBackend:
    raw: dict[str, Any] = {
        "type": "kubernetes",
        "kubeconfig": {"data": cluster.kubeconfig(token, namespace=context_namespace)},
    }
    if namespace is not None:
        raw["namespace"] = namespace
    config = KubernetesBackendConfig.model_validate(raw)
    return CloudGatewayBackend("kubernetes", KubernetesDriver(config), XDS, lambda _: ports, join)


@pytest.fixture
def join(tmp_path: Path) -> JoinSetup:
    """Join tokens and an endpoint; nothing answers there: the pods' side is test_kubernetes_pod."""
    endpoint = JoinEndpoint(
        "https://xds.gatehouse.example:50055", InternalCA.create().certificate_pem.decode()
    )
    return JoinSetup(local_join_tokens(), endpoint)


def files_of(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def secret_of(cluster: FakeKubernetes, index: int) -> dict[str, Any]:
    [secret] = [
        s
        for s in cluster.of("secrets", NAMESPACE)
        if s["metadata"]["name"] == f"gatehouse-{GATEWAY_ID}-{index}"
    ]
    return secret


async def test_a_gateway_is_envoy_deployments_behind_a_load_balancer_service(cluster: FakeKubernetes) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID, domain="example.com", replicas=2)
    host = await converge(backend(cluster), gw)

    # In the configured namespace: no namespace of its own.
    assert {n["metadata"]["name"] for n in cluster.of("namespaces")} == {"default", NAMESPACE}
    [service] = cluster.of("services", NAMESPACE)
    assert service["metadata"]["name"] == SERVICE
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "gatehouse-envoy",
        "gatehouse-gateway": GATEWAY_ID,
    }
    assert {(p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {(80, 8080), (443, 8443)}
    assert host.hostname == service["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert (host.http_port, host.https_port) == (8080, 8443)

    deployments = sorted(cluster.of("deployments", NAMESPACE), key=lambda d: d["metadata"]["name"])
    assert [d["metadata"]["name"] for d in deployments] == [f"gatehouse-{GATEWAY_ID}-{i}" for i in range(2)]
    plan = GatewayPlan.of(gw, XDS)
    for index, deployment in enumerate(deployments):
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["image"] == ENVOY_IMAGE
        assert container["args"][:2] == ["-c", "/etc/gatehouse/envoy.json"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert deployment["spec"]["strategy"]["type"] == "Recreate"
        secret = secret_of(cluster, index)
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
    assert [d["metadata"]["name"] for d in cluster.of("deployments", NAMESPACE)] == [
        f"gatehouse-{GATEWAY_ID}-0"
    ]
    assert [s["metadata"]["name"] for s in cluster.of("secrets", NAMESPACE)] == [f"gatehouse-{GATEWAY_ID}-0"]
    [service] = cluster.of("services", NAMESPACE)
    assert {p["port"] for p in service["spec"]["ports"]} == {80, 443}


async def test_delete_removes_the_gateways_objects_and_nothing_else(cluster: FakeKubernetes) -> None:
    before = cluster.inventory()
    other = gateway("kubernetes", "any", "gw-000000000002")
    await converge(backend(cluster), other)
    with_other = cluster.inventory()
    gw = gateway("kubernetes", "any", GATEWAY_ID, replicas=2)
    await converge(backend(cluster), gw)
    await delete_fully(backend(cluster), gw)
    assert cluster.inventory() == with_other
    await delete_fully(backend(cluster), gw)
    await delete_fully(backend(cluster), other)
    assert cluster.inventory() == before


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
    cluster: FakeKubernetes, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        await converge(backend(cluster), gateway("kubernetes", "any", GATEWAY_ID, **spec))
    assert cluster.of("services") == cluster.of("deployments") == []


async def test_quota_and_wrong_credentials_fail_in_one_line_with_the_clusters_words(
    cluster: FakeKubernetes,
) -> None:
    with pytest.raises(BackendError, match=r"^kubernetes: Unauthorized$"):
        await converge(backend(cluster, token="wrong"), gateway("kubernetes", "any", GATEWAY_ID))
    cluster.load_balancer_quota = 0
    with pytest.raises(
        BackendError, match=rf'^kubernetes: services "{SERVICE}" is forbidden: exceeded quota'
    ):
        await converge(backend(cluster), gateway("kubernetes", "any", GATEWAY_ID))


async def test_with_mtls_a_pod_joins_before_envoy_starts_and_renews_beside_it(
    cluster: FakeKubernetes, join: JoinSetup
) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID, replicas=2)
    k8s = backend(cluster, join=join)
    await converge(k8s, gw)
    plan = k8s.plan(gw)
    url = join.endpoint.url
    tokens = set()
    for index in range(2):
        [deployment] = [
            d
            for d in cluster.of("deployments", NAMESPACE)
            if d["metadata"]["name"] == f"gatehouse-{GATEWAY_ID}-{index}"
        ]
        pod = deployment["spec"]["template"]["spec"]
        [init] = pod["initContainers"]
        envoy, renew = pod["containers"]
        # One image for all three: the official Envoy image has sh and openssl.
        assert init["image"] == envoy["image"] == renew["image"] == ENVOY_IMAGE
        assert init["command"] == ["/bin/sh", "/etc/gatehouse/join.sh", "join", url]
        assert renew["command"] == ["/bin/sh", "/etc/gatehouse/join.sh", "renew-loop", url]
        assert envoy["args"][:2] == ["-c", "/etc/gatehouse/envoy.json"]
        mounts = {
            c["name"]: {m["mountPath"]: m.get("readOnly", False) for m in c["volumeMounts"]}
            for c in (init, envoy, renew)
        }
        assert mounts == {
            "join": {"/etc/gatehouse": True, "/var/lib/gatehouse": False},
            "envoy": {"/etc/gatehouse": True, "/var/lib/gatehouse": True, ADMIN_SOCKET_DIR: False},
            "renew": {"/etc/gatehouse": True, "/var/lib/gatehouse": False},
        }
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["identity"]["emptyDir"]["medium"] == "Memory"
        # Envoy's admin interface: a socket in the pod, no port a Service or route could reach.
        assert volumes["admin"]["emptyDir"]["medium"] == "Memory"
        assert [p["containerPort"] for p in envoy["ports"]] == [8080, 8443]
        assert volumes["config"]["secret"] == {
            "secretName": f"gatehouse-{GATEWAY_ID}-{index}",
            "defaultMode": 0o440,
        }
        assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 101

        # The Secret holds what a cloud host's startup script writes, and a token of its own.
        files = files_of(secret_of(cluster, index))
        token = files.pop("join-token")
        assert plan.join_token_live(token)
        tokens.add(token)
        assert files == {file.name: file.content for file in plan.host_files(index, None)}
        cluster_config = json.loads(files["envoy.json"])["static_resources"]["clusters"][0]
        tls = cluster_config["transport_socket"]["typed_config"]["common_tls_context"]
        [sds] = tls["tls_certificate_sds_secret_configs"]
        assert sds["sds_config"]["path_config_source"]["path"] == "/etc/gatehouse/xds-client-sds.json"
    assert len(tokens) == 2


async def test_a_pod_made_again_gets_a_new_token_once_its_own_is_used(
    cluster: FakeKubernetes, join: JoinSetup
) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID)
    k8s = backend(cluster, join=join)
    await converge(k8s, gw)
    first = manifests.secret_join_token(secret_of(cluster, 0)["data"])
    assert first is not None
    await join.tokens.redeem(first)  # the pod's init container joined
    # A running host keeps its Secret as it is.
    await converge(k8s, gw)
    assert manifests.secret_join_token(secret_of(cluster, 0)["data"]) == first

    # The node is drained: the pod made again has an empty emptyDir and a used token.
    cluster.pods_available = False
    deployment = cluster.of("deployments", NAMESPACE)[0]
    with pytest.raises(NotReady, match="waiting for 1 host"):
        await k8s.create_or_update(gw)
    second = manifests.secret_join_token(secret_of(cluster, 0)["data"])
    assert second is not None and second != first and join.tokens.is_live(second)
    # While that token can still be redeemed, the pod is joining with it: it stays.
    with pytest.raises(NotReady):
        await k8s.create_or_update(gw)
    assert manifests.secret_join_token(secret_of(cluster, 0)["data"]) == second
    # Nothing else changed: the Deployment is the same one (no rollout), the files the same.
    assert cluster.of("deployments", NAMESPACE)[0]["metadata"]["uid"] == deployment["metadata"]["uid"]
    assert cluster.of("deployments", NAMESPACE)[0]["metadata"]["generation"] == 1
    cluster.pods_available = True
    await converge(k8s, gw)


async def test_the_fake_cluster_refuses_manifests_the_api_server_would(
    cluster: FakeKubernetes, join: JoinSetup
) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID)
    k8s = backend(cluster, join=join)
    await converge(k8s, gw)
    plan = k8s.plan(gw)
    broken = manifests.deployment(plan, 1, "f")
    pod = broken["spec"]["template"]["spec"]
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "identity"]
    pod["containers"][1]["name"] = "join"
    pod["containers"][1]["resources"]["requests"]["memory"] = "128Mi"
    broken["spec"]["selector"]["matchLabels"]["gatehouse-host"] = "7"
    apps = k8s.driver.apps  # type: ignore[attr-defined]
    with pytest.raises(client.ApiException) as refused:
        apps.create_namespaced_deployment(NAMESPACE, client.V1Deployment.model_validate(broken))
    assert refused.value.status == 422
    assert refused.value.body is not None
    message = json.loads(refused.value.body)["message"]
    assert message.startswith(f'Deployment.apps "gatehouse-{GATEWAY_ID}-1" is invalid: ')
    for problem in (
        "`selector` does not match template `labels`",
        'spec.template.spec.initContainers[0].volumeMounts[1].name: Not found: "identity"',
        'spec.template.spec.containers[1].name: Duplicate value: "join"',
        'spec.template.spec.containers[1].resources.requests: Invalid value: "128Mi": must be less than '
        "or equal to memory limit of 64Mi",
    ):
        assert problem in message
    secret = manifests.secret(plan, 1, "f", None)
    secret["data"]["not/a key"] = "!!"
    with pytest.raises(client.ApiException) as refused:
        k8s.driver.core.create_namespaced_secret(NAMESPACE, client.V1Secret.model_validate(secret))  # type: ignore[attr-defined]
    assert refused.value.status == 422 and "illegal base64 data" in (refused.value.body or "")


async def test_everything_is_in_one_namespace_and_a_namespaced_role_there_is_all_it_needs(
    cluster: FakeKubernetes,
) -> None:
    # The fixture's token is bound to the README's Role in `gatehouse` only: no cluster-wide rights.
    gw = gateway("kubernetes", "any", GATEWAY_ID, replicas=2)
    await converge(backend(cluster), gw)
    await delete_fully(backend(cluster), gw)
    # Without `namespace`, the kubeconfig context's; without either, `default`, where the Role is not.
    await converge(backend(cluster, namespace=None, context_namespace=NAMESPACE), gw)
    assert len(cluster.of("deployments", NAMESPACE)) == 2
    with pytest.raises(BackendError) as refused:
        await converge(backend(cluster, namespace=None), gateway("kubernetes", "any", "gw-000000000002"))
    assert str(refused.value) == (
        f'kubernetes: services "gatehouse-gw-000000000002" is forbidden: User "system:serviceaccount:'
        f'{NAMESPACE}:gatehouse" cannot get resource "services" in API group "" in the namespace "default"'
    )
    # A namespace that does not exist is named (with credentials that may look there).
    with pytest.raises(BackendError) as missing:
        await converge(
            backend(cluster, token=cluster.admin_token, namespace="edge"),
            gateway("kubernetes", "any", GATEWAY_ID),
        )
    assert str(missing.value) == (
        "kubernetes: namespace edge does not exist: create it (with a Role for Gatehouse there), "
        "or set `namespace` in the project's kubernetes backend"
    )


@pytest.mark.parametrize("mtls", [False, True], ids=["plain", "mtls"])
async def test_the_envoy_pod_meets_pod_security_restricted(
    cluster: FakeKubernetes, join: JoinSetup, mtls: bool
) -> None:
    k8s = backend(cluster, join=join if mtls else None)
    gw = gateway("kubernetes", "any", GATEWAY_ID)
    # The namespace enforces "restricted": a pod breaking it would never start (and never converge).
    await converge(k8s, gw)
    [deployment] = cluster.of("deployments", NAMESPACE)
    assert deployment["status"]["availableReplicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert all(port["containerPort"] > 1024 for port in container.get("ports", []))


async def test_pods_the_cluster_refuses_are_shown_on_the_gateway_with_the_clusters_words(
    cluster: FakeKubernetes,
) -> None:
    cluster.pod_quota = 1
    gw = gateway("kubernetes", "any", GATEWAY_ID, replicas=2)
    said = []
    for _ in range(5):
        with pytest.raises(NotReady) as pending:
            await backend(cluster).create_or_update(gw)
        said.append(str(pending.value))
    assert said[-1].startswith(f'host 1: pods "gatehouse-{GATEWAY_ID}-1-')
    assert said[-1].endswith(
        "is forbidden: exceeded quota: compute, requested: pods=1, used: pods=1, limited: pods=1"
    )
    # Listing the hosts (as replacing one does) only lists.
    k8s = backend(cluster)
    assert sorted(host.running for host in k8s.driver.hosts(k8s.plan(gw))) == [False, True]
    cluster.pod_quota = None
    await converge(backend(cluster), gw)


async def test_the_fake_cluster_holds_rbac_and_pod_security_as_a_cluster_does(
    cluster: FakeKubernetes, join: JoinSetup
) -> None:
    k8s = backend(cluster, join=join)
    plan = k8s.plan(gateway("kubernetes", "any", GATEWAY_ID))
    core = k8s.driver.core  # type: ignore[attr-defined]
    with pytest.raises(client.ApiException) as forbidden:
        core.create_namespace(client.V1Namespace.model_validate({"metadata": {"name": "mine"}}))
    assert forbidden.value.status == 403 and forbidden.value.body is not None
    assert json.loads(forbidden.value.body)["message"] == (
        f'namespaces is forbidden: User "system:serviceaccount:{NAMESPACE}:gatehouse" cannot create '
        'resource "namespaces" in API group "" at the cluster scope'
    )
    # A pod spec that is not "restricted" is admitted as a Deployment (with a warning), and its pods
    # are refused: the Deployment says why.
    loose = manifests.deployment(plan, 0, "f")
    pod = loose["spec"]["template"]["spec"]
    del pod["securityContext"]["seccompProfile"]
    for container in [*pod["initContainers"], *pod["containers"]]:
        container["securityContext"] = {}
    apps = k8s.driver.apps  # type: ignore[attr-defined]
    apps.create_namespaced_deployment(NAMESPACE, client.V1Deployment.model_validate(loose))
    [created] = cluster.of("deployments", NAMESPACE)
    core.list_namespaced_secret(NAMESPACE)  # time passes: the ReplicaSet tries
    [condition] = created["status"]["conditions"]
    assert (condition["type"], condition["reason"]) == ("ReplicaFailure", "FailedCreate")
    assert 'violates PodSecurity "restricted:latest": ' in condition["message"]
    for problem in (
        'allowPrivilegeEscalation != false (containers "join", "envoy", "renew" must set '
        "securityContext.allowPrivilegeEscalation=false)",
        'unrestricted capabilities (containers "join", "envoy", "renew" must set '
        'securityContext.capabilities.drop=["ALL"])',
        'seccompProfile (pod or containers "join", "envoy", "renew" must set '
        'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")',
    ):
        assert problem in condition["message"]


def test_the_readme_asks_for_exactly_the_role_the_fake_cluster_grants() -> None:
    """Every test here runs with the README's Role and no more: the docs cannot drift from the code."""
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    [block] = [
        block.split("```", 1)[0]
        for block in readme.split("```yaml\n")[1:]
        if "kind: Role\n" in block.split("```", 1)[0]
    ]
    role = yaml.safe_load(block)
    granted = [
        Rule(tuple(rule["apiGroups"]), tuple(rule["resources"]), tuple(rule["verbs"]))
        for rule in role["rules"]
    ]
    assert granted == list(PROVISIONER_ROLE)


async def test_a_host_whose_envoy_never_connects_is_replaced_with_its_pod_logs_shown(
    cluster: FakeKubernetes, join: JoinSetup
) -> None:
    gw = gateway("kubernetes", "any", GATEWAY_ID)
    driven = backend(cluster, join=join)
    await converge(driven, gw)
    [deployment] = cluster.of("deployments", NAMESPACE)
    name = deployment["metadata"]["name"]
    # The join container gave up; Envoy, behind it, never started (its log: "waiting to start").
    cluster.logs[(name, "join")] = (
        "gatehouse: joining at https://xds.gatehouse.example:50055\n"
        "gatehouse: join refused: the token was already used\n"
    )
    replaced = await never_connecting(driven, gw)
    # Its launch time is the Deployment's creationTimestamp, so the deadline held across a restart.
    created = datetime.fromisoformat(deployment["metadata"]["creationTimestamp"]).timestamp()
    assert replaced.hosts[0].launched_at == created
    assert "join refused: the token was already used" in replaced.message
    assert replaced.message.startswith(f"host 0's Envoy did not connect within 600s: {name}-")
    assert cluster.of("deployments", NAMESPACE) == []


LEGACY_NAMESPACE = f"gatehouse-{GATEWAY_ID}"


def legacy_gateway(cluster: FakeKubernetes) -> None:
    """What the previous version made for the gateway: its own namespace (labelled with it), with a
    Deployment, a Secret and a LoadBalancer Service in it, made as cluster-admin (as it needed)."""
    cluster.add_namespace(LEGACY_NAMESPACE, {"gatehouse-gateway": GATEWAY_ID})
    configuration = client.Configuration(host=cluster.url)
    configuration.api_key = {"authorization": f"Bearer {cluster.admin_token}"}
    api = client.ApiClient(configuration)
    plan = backend(cluster).plan(gateway("kubernetes", "any", GATEWAY_ID))
    core = client.CoreV1Api(api)
    secret = client.V1Secret.model_validate(manifests.secret(plan, 0, "old", None))
    core.create_namespaced_secret(LEGACY_NAMESPACE, secret)
    core.create_namespaced_service(LEGACY_NAMESPACE, client.V1Service.model_validate(manifests.service(plan)))
    deployment = client.V1Deployment.model_validate(manifests.deployment(plan, 0, "old"))
    client.AppsV1Api(api).create_namespaced_deployment(LEGACY_NAMESPACE, deployment)


def legacy_objects(cluster: FakeKubernetes) -> set[str]:
    return {
        f"{kind}/{name}"
        for (kind, namespace, name) in cluster.objects
        if namespace == LEGACY_NAMESPACE or (kind, name) == ("namespaces", LEGACY_NAMESPACE)
    }


async def test_a_gateway_of_the_previous_version_leaves_nothing_in_its_own_namespace(
    cluster: FakeKubernetes,
) -> None:
    legacy_gateway(cluster)
    assert len(legacy_objects(cluster)) == 4
    gw = gateway("kubernetes", "any", GATEWAY_ID)
    # Credentials that still have the previous version's cluster permission: reconciling moves the
    # gateway into the configured namespace, and deleting leaves nothing of it anywhere.
    admin = backend(cluster, token=cluster.admin_token)
    await converge(admin, gw)
    assert legacy_objects(cluster) <= {f"namespaces/{LEGACY_NAMESPACE}", f"services/{SERVICE}"}
    await delete_fully(admin, gw)
    # The namespace itself (the gateway's, by its label) was deleted too, and terminates.
    cluster.of("namespaces")  # time passes with each request
    await delete_fully(admin, gw)
    assert legacy_objects(cluster) == set()
    assert cluster.of("deployments", NAMESPACE) == [] and cluster.of("secrets", NAMESPACE) == []


async def test_with_only_the_namespaced_role_the_legacy_namespace_is_named_in_one_warning(
    cluster: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    legacy_gateway(cluster)
    gw = gateway("kubernetes", "any", GATEWAY_ID)
    driven = backend(cluster)
    with caplog.at_level("WARNING"):
        await converge(driven, gw)
        await converge(driven, gw)
        await delete_fully(driven, gw)
    warnings = [r.getMessage() for r in caplog.records if LEGACY_NAMESPACE in r.getMessage()]
    # Once when reconciled (not every pass), once when deleted; nothing fails.
    assert len(warnings) == 2 and all("\n" not in w for w in warnings), warnings
    assert f"cannot look in namespace {LEGACY_NAMESPACE}" in warnings[0]
    assert len(legacy_objects(cluster)) == 4

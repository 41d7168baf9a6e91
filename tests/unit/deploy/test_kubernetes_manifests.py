"""deploy/kubernetes/: every object valid for its kind's Kubernetes schema, and the control plane
they describe is the one the processes expect (two of each, gRPC health probes, least privilege)."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from kubernetes import config as k8s_config

from cli.main import build_parser
from gatehouse.client.defaults import DEFAULT_API_ADDRESS, DEFAULT_XDS_PORT
from gateway_xds.server.server import ADS_SERVICE
from services.common.settings import DEFAULT_JOIN_PORT
from services.provisioner.backends.kubernetes.driver import _context_namespace
from tests.support.kubernetes_schemas import kinds, schema_errors

ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = ROOT / "deploy" / "kubernetes"
SECRET_TEMPLATE = MANIFESTS / "secret.yaml.example"
ROLES = ("registry", "xds", "provisioner", "certificates")
API_PORT = int(DEFAULT_API_ADDRESS.rpartition(":")[2])
GATEWAY_NAMESPACE = "gatehouse-gateways"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def _all() -> list[tuple[str, dict[str, Any]]]:
    files = [*sorted(MANIFESTS.glob("*.yaml")), SECRET_TEMPLATE]
    return [(f"{path.name}#{index}", doc) for path in files for index, doc in enumerate(_documents(path))]


OBJECTS = _all()


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in OBJECTS if document["kind"] == kind]


def _deployment(role: str) -> dict[str, Any]:
    (found,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == f"gatehouse-{role}"]
    return found


def _container(role: str) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _deployment(role)["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _valid_deployment() -> dict[str, Any]:
    return copy.deepcopy(_deployment("registry"))


@pytest.mark.parametrize(("where", "document"), OBJECTS, ids=[where for where, _ in OBJECTS])
def test_every_object_is_valid_for_its_kind(where: str, document: dict[str, Any]) -> None:
    assert schema_errors(document) == []


def test_the_manifests_cover_the_control_plane_and_only_vendored_kinds() -> None:
    assert {f"{d['apiVersion']}/{d['kind']}" for _, d in OBJECTS} == kinds()
    assert sorted(d["metadata"]["name"] for d in _of_kind("Deployment")) == sorted(
        f"gatehouse-{role}" for role in ROLES
    )


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        # A misspelt field, at three depths: the strict schema knows every field there is.
        (lambda d: d["spec"].__setitem__("replica", 2), "'replica' was unexpected"),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__(
                "readinesProbe", {"grpc": {"port": API_PORT}}
            ),
            "'readinesProbe' was unexpected",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"].__setitem__(
                "servce", "x"
            ),
            "'servce' was unexpected",
        ),
        # A wrong type, a missing required field, a wrong kind of object at the top.
        (lambda d: d["spec"].__setitem__("replicas", "2"), "'2' is not of type"),
        (lambda d: d["spec"].pop("selector"), "'selector' is a required property"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "'name' is a required"),
        (lambda d: d.__setitem__("kind", "Deploymnt"), "no schema for apps/v1/Deploymnt"),
    ],
    ids=["top", "container", "probe", "type", "required", "container-name", "kind"],
)
def test_a_spoilt_manifest_is_refused(spoil: Any, expected: str) -> None:
    document = _valid_deployment()
    assert schema_errors(document) == []
    spoil(document)
    errors = schema_errors(document)
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize("role", ROLES)
def test_each_process_runs_twice_with_grpc_health_probes_on_its_own_port(role: str) -> None:
    deployment = _deployment(role)
    container = _container(role)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # The command is one the CLI takes, for this role; its API port is what the probes ask.
    args = build_parser().parse_args(container["args"])
    assert args.top == role
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    if role == "xds":
        # The xDS port wants a client certificate: the plaintext health port is probed, for ADS.
        assert ports["xds"] == DEFAULT_XDS_PORT
        expected_probe = {"port": ports["health"], "service": ADS_SERVICE}
    else:
        api_port = args.port if args.port is not None else API_PORT
        assert ports["api"] == api_port
        expected_probe = {"port": api_port}
    assert container["readinessProbe"]["grpc"] == expected_probe
    assert container["livenessProbe"]["grpc"] == expected_probe
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], template_labels)


@pytest.mark.parametrize("role", ROLES)
def test_each_process_is_non_root_on_a_read_only_root_with_bounded_memory(role: str) -> None:
    pod = _deployment(role)["spec"]["template"]["spec"]
    container = _container(role)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]
    # No state on local disk: the only writable places are emptyDirs, GATEHOUSE_HOME among them.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert all(set(volume) == {"name", "emptyDir"} for volume in volumes.values())
    (configmap,) = _of_kind("ConfigMap")
    home = Path(configmap["data"]["GATEHOUSE_HOME"])
    mounts = [Path(mount["mountPath"]) for mount in container["volumeMounts"]]
    assert any(home.is_relative_to(mount) for mount in mounts)


@pytest.mark.parametrize("role", ROLES)
def test_each_process_gets_the_environment_contract_and_only_the_secrets_it_uses(role: str) -> None:
    container = _container(role)
    assert container["envFrom"] == [{"configMapRef": {"name": "gatehouse"}}]
    secrets = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]["key"]
        for entry in container["env"]
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    expected = {"GATEHOUSE_SYSTEM_TOKEN": "system-token", "GATEHOUSE_ENCRYPTION_KEY": "encryption-key"}
    if role == "registry":
        expected["GATEHOUSE_DB_URL"] = "db-url"
    if role == "xds":
        expected["GATEHOUSE_REDIS_URL"] = "redis-url"
    assert secrets == expected
    (configmap,) = _of_kind("ConfigMap")
    data = configmap["data"]
    assert data["GATEHOUSE_JOIN_PORT"] == str(DEFAULT_JOIN_PORT)
    assert data["GATEHOUSE_REGISTRY"].rpartition(":")[2] == str(API_PORT)
    assert data["GATEHOUSE_XDS_PUBLIC_ADDRESS"].rpartition(":")[2] == str(DEFAULT_XDS_PORT)
    assert (
        int(data["GATEHOUSE_XDS_HEALTH_PORT"])
        == {p["name"]: p for p in _container("xds")["ports"]}["health"]["containerPort"]
    )
    # The registry's address is its Service's name.
    service_host = data["GATEHOUSE_REGISTRY"].split(".")[0]
    assert service_host in {service["metadata"]["name"] for service in _of_kind("Service")}


@pytest.mark.parametrize("role", ROLES)
def test_a_disruption_budget_keeps_one_of_each_process(role: str) -> None:
    labels = _deployment(role)["spec"]["template"]["metadata"]["labels"]
    budgets = [
        b for b in _of_kind("PodDisruptionBudget") if _selects(b["spec"]["selector"]["matchLabels"], labels)
    ]
    assert [budget["spec"]["minAvailable"] for budget in budgets] == [1]


def _pods_with_port(service: dict[str, Any], target: str) -> set[str]:
    """The Deployments a Service's port reaches: selected, and with a container port of that name."""
    reached = set()
    for deployment in _of_kind("Deployment"):
        template = deployment["spec"]["template"]
        if not _selects(service["spec"]["selector"], template["metadata"]["labels"]):
            continue
        names = {port["name"] for c in template["spec"]["containers"] for port in c["ports"]}
        if target in names:
            reached.add(deployment["metadata"]["name"])
    return reached


@pytest.mark.parametrize("service", _of_kind("Service"), ids=lambda s: s["metadata"]["name"])
def test_every_service_port_reaches_pods(service: dict[str, Any]) -> None:
    for port in service["spec"]["ports"]:
        assert _pods_with_port(service, port["targetPort"]), port


def test_gateway_hosts_reach_xds_and_join_on_one_address_each_port_its_own_pods() -> None:
    (facing,) = [s for s in _of_kind("Service") if s["metadata"]["name"] == "gatehouse-gateway-facing"]
    assert facing["spec"]["type"] == "LoadBalancer"
    ports = {port["name"]: port for port in facing["spec"]["ports"]}
    assert ports["xds"]["port"] == DEFAULT_XDS_PORT
    assert ports["join"]["port"] == DEFAULT_JOIN_PORT
    assert _pods_with_port(facing, "xds") == {"gatehouse-xds"}
    assert _pods_with_port(facing, "join") == {"gatehouse-provisioner"}
    # Nothing else of the control plane is on it: not the API, not the health port.
    assert set(ports) == {"xds", "join"}
    join = {p["name"]: p["containerPort"] for p in _container("provisioner")["ports"]}["join"]
    assert join == DEFAULT_JOIN_PORT


def _readme_role_rules() -> list[dict[str, Any]]:
    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "kind: Role" in b]
    rules: list[dict[str, Any]] = yaml.safe_load(block)["rules"]
    return rules


def test_the_provisioner_may_do_what_its_kubernetes_backend_calls_in_the_gateways_namespace_only() -> None:
    assert {d["kind"] for _, d in OBJECTS}.isdisjoint({"ClusterRole", "ClusterRoleBinding"})
    (role,) = _of_kind("Role")
    (binding,) = _of_kind("RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == GATEWAY_NAMESPACE
    assert role["rules"] == _readme_role_rules()
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert "*" not in verbs and "escalate" not in verbs and "bind" not in verbs
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    provisioner_account = _deployment("provisioner")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": provisioner_account, "namespace": "gatehouse"}
    ]
    # No pod carries an API token: the provisioner's reaches the backend in its kubeconfig.
    for role_name in ROLES:
        assert _deployment(role_name)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    (token,) = [s for s in _of_kind("Secret") if s.get("type") == "kubernetes.io/service-account-token"]
    assert token["metadata"]["annotations"] == {"kubernetes.io/service-account.name": provisioner_account}


def test_the_secret_template_holds_no_usable_secret() -> None:
    (secret,) = _documents(SECRET_TEMPLATE)
    values = secret["stringData"]
    assert set(values) == {"system-token", "encryption-key", "db-url", "redis-url"}
    assert all("REPLACE" in values[key] for key in ("system-token", "encryption-key"))
    with pytest.raises(ValueError):
        Fernet(values["encryption-key"])
    assert "USER:PASSWORD@HOST" in values["db-url"]
    # kubectl apply -f deploy/kubernetes/ takes *.yaml, *.yml and *.json: not the template.
    assert SECRET_TEMPLATE.suffix not in (".yaml", ".yml", ".json")


def test_the_readme_kubeconfig_gives_the_backend_the_gateways_namespace_and_the_token() -> None:
    readme = (ROOT / "README.md").read_text()
    (script,) = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "provisioner.kubeconfig" in b]
    template = script.split("<<EOF\n", 1)[1].split("\nEOF", 1)[0]
    token = "a-service-account-token"
    ca_data = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    filled = template.replace("$(secret token | base64 -d)", token).replace("$(secret 'ca\\.crt')", ca_data)
    assert "$(" not in filled
    kubeconfig = yaml.safe_load(filled)
    assert _context_namespace(kubeconfig) == GATEWAY_NAMESPACE
    api = k8s_config.new_client_from_config_dict(kubeconfig, persist_config=False)
    assert api.configuration.host == "https://kubernetes.default.svc"
    assert api.configuration.api_key["BearerToken"] == f"Bearer {token}"


def test_every_reference_names_an_object_of_the_manifests_in_the_same_namespace() -> None:
    namespaces = {namespace["metadata"]["name"] for namespace in _of_kind("Namespace")}
    assert namespaces == {"gatehouse", GATEWAY_NAMESPACE}
    for _, document in OBJECTS:
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] in namespaces, document["metadata"]
    (template,) = _documents(SECRET_TEMPLATE)
    (configmap,) = _of_kind("ConfigMap")
    accounts = {account["metadata"]["name"] for account in _of_kind("ServiceAccount")}
    for role in ROLES:
        deployment = _deployment(role)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] in accounts
        for entry in _container(role)["env"]:
            reference = entry["valueFrom"]["secretKeyRef"]
            assert reference["name"] == template["metadata"]["name"]
            assert reference["key"] in template["stringData"]
        assert _container(role)["envFrom"][0]["configMapRef"]["name"] == configmap["metadata"]["name"]

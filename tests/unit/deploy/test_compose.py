"""docker-compose.yml: two of each process, each healthy only when its gRPC server says so, none with
a volume, all given the environment contract; one Envoy in front, whose configuration Envoy takes."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from cli.main import build_parser
from gatehouse.client.defaults import DEFAULT_API_ADDRESS, DEFAULT_XDS_PORT
from gateway_xds.server.server import ADS_SERVICE
from services.common.settings import DEFAULT_JOIN_PORT
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.local.gateway import envoy_binary
from services.provisioner.hosts.startup import ENVOY_IMAGE
from tests.support.real import require_real

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
EDGE_CONFIG = ROOT / "deploy" / "compose" / "edge.yaml"
SPEC = Draft7Validator(
    json.loads((ROOT / "tests" / "fixtures" / "compose" / "compose-spec.json").read_text())
)
ROLES = ("registry", "xds", "provisioner", "certificates")
API_PORT = int(DEFAULT_API_ADDRESS.rpartition(":")[2])
HEALTH_CHECK = ["CMD", "python", "-m", "services.common.health_check"]
CONTRACT = {
    "GATEHOUSE_DB_URL",
    "GATEHOUSE_REDIS_URL",
    "GATEHOUSE_REGISTRY",
    "GATEHOUSE_XDS_PUBLIC_ADDRESS",
    "GATEHOUSE_JOIN_PORT",
    "GATEHOUSE_XDS_HEALTH_PORT",
    "GATEHOUSE_SYSTEM_TOKEN",
    "GATEHOUSE_ENCRYPTION_KEY",
}


def _api_port(role: str) -> int:
    args = build_parser().parse_args(SERVICES[role]["command"])
    assert args.top == role
    return int(args.port) if args.port is not None else API_PORT


def _health_port() -> int:
    return int(SERVICES["xds"]["environment"]["GATEHOUSE_XDS_HEALTH_PORT"])


def _spec_errors(document: dict[str, Any]) -> list[str]:
    return sorted({error.message for error in SPEC.iter_errors(document)})


def test_the_compose_file_is_valid_for_the_compose_specification() -> None:
    assert _spec_errors(COMPOSE) == []


@pytest.mark.parametrize(
    ("spoil", "expected"),
    [
        (lambda c: c["services"]["registry"].__setitem__("helthcheck", {}), "'helthcheck' does not match"),
        (
            lambda c: c["services"]["xds"]["healthcheck"].__setitem__("intervl", "2s"),
            "'intervl' does not match",
        ),
        (
            lambda c: c["services"]["registry"]["deploy"].__setitem__("replicas", [2]),
            "[2] is not of type",
        ),
        (lambda c: c.__setitem__("volume", {}), "'volume' does not match"),
    ],
    ids=["service", "healthcheck", "type", "top"],
)
def test_a_spoilt_compose_file_is_refused(spoil: Any, expected: str) -> None:
    spoilt = copy.deepcopy(COMPOSE)
    spoil(spoilt)
    errors = _spec_errors(spoilt)
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize("role", ROLES)
def test_each_process_runs_twice_with_nothing_of_its_own_on_disk_or_on_the_host(role: str) -> None:
    service = SERVICES[role]
    assert service["deploy"]["replicas"] == 2
    # A fixed name or a published port would stop the second copy; a volume would be state.
    assert {"container_name", "ports", "volumes"}.isdisjoint(service)
    assert set(service["environment"]) >= CONTRACT


def test_only_the_databases_own_state_and_no_volume_is_shared() -> None:
    users: dict[str, list[str]] = {}
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.partition(":")[0]
            users.setdefault(source, []).append(name)
            if source.startswith((".", "/")):
                # A file from the checkout, read-only: the edge's configuration.
                assert (name, volume.rpartition(":")[2]) == ("edge", "ro")
    assert all(len(names) == 1 for names in users.values()), users
    assert set(COMPOSE["volumes"]) == {"postgres"}


@pytest.mark.parametrize("role", ROLES)
def test_each_process_is_healthy_when_its_grpc_server_says_so(role: str) -> None:
    test = SERVICES[role]["healthcheck"]["test"]
    assert test[: len(HEALTH_CHECK)] == HEALTH_CHECK
    if role == "xds":
        assert test[len(HEALTH_CHECK) :] == [f"127.0.0.1:{_health_port()}", ADS_SERVICE]
    else:
        assert test[len(HEALTH_CHECK) :] == [f"127.0.0.1:{_api_port(role)}"]


def test_secrets_come_from_the_environment_with_no_default() -> None:
    environment = SERVICES["registry"]["environment"]
    for name in ("GATEHOUSE_SYSTEM_TOKEN", "GATEHOUSE_ENCRYPTION_KEY"):
        assert environment[name].startswith(f"${{{name}:?"), environment[name]


def test_the_processes_find_each_other_by_service_name() -> None:
    environment = SERVICES["registry"]["environment"]
    host, _, port = environment["GATEHOUSE_REGISTRY"].rpartition(":")
    assert (host, int(port)) == ("registry", _api_port("registry"))
    assert environment["GATEHOUSE_DB_URL"].split("@")[1].startswith("postgres:")
    assert environment["GATEHOUSE_REDIS_URL"].startswith("redis://redis:")
    assert int(environment["GATEHOUSE_JOIN_PORT"]) == DEFAULT_JOIN_PORT
    for dependency in ("postgres", "redis"):
        assert "healthcheck" in SERVICES[dependency]
    for role in ("xds", "provisioner", "certificates"):
        assert SERVICES[role]["depends_on"]["registry"] == {"condition": "service_healthy"}


def _clusters() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(EDGE_CONFIG.read_text())
    return {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}


def _endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return dict(endpoint["endpoint"])


def test_the_edge_publishes_the_api_xds_and_join_and_forwards_each_to_its_process() -> None:
    edge = SERVICES["edge"]
    assert edge["image"] == ENVOY_IMAGE
    published = {int(port.partition(":")[0]): int(port.partition(":")[2]) for port in edge["ports"]}
    assert published == {
        API_PORT: API_PORT,
        DEFAULT_XDS_PORT: DEFAULT_XDS_PORT,
        DEFAULT_JOIN_PORT: DEFAULT_JOIN_PORT,
    }
    clusters = _clusters()
    targets = {name: _endpoint(cluster)["address"]["socket_address"] for name, cluster in clusters.items()}
    assert targets == {
        "registry": {"address": "registry", "port_value": _api_port("registry")},
        "xds": {"address": "xds", "port_value": DEFAULT_XDS_PORT},
        "join": {"address": "provisioner", "port_value": DEFAULT_JOIN_PORT},
    }
    # Health asked where each process answers it in plaintext.
    assert _endpoint(clusters["xds"])["health_check_config"] == {"port_value": _health_port()}
    assert clusters["xds"]["health_checks"][0]["grpc_health_check"] == {"service_name": ADS_SERVICE}
    assert _endpoint(clusters["join"])["health_check_config"] == {"port_value": _api_port("provisioner")}


@pytest.mark.real
def test_envoy_takes_the_edge_configuration_and_refuses_a_misspelt_one(tmp_path: Path) -> None:
    try:
        envoy = envoy_binary()
    except BackendError as error:
        require_real(str(error))

    def validate(path: Path) -> subprocess.CompletedProcess[str]:
        argv = [envoy, "--mode", "validate", "-c", str(path), "--log-level", "critical"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    good = validate(EDGE_CONFIG)
    assert good.returncode == 0, good.stdout + good.stderr
    spoilt = tmp_path / "edge.yaml"
    spoilt.write_text(EDGE_CONFIG.read_text().replace("grpc_health_check: {}", "grpc_health_chek: {}"))
    bad = validate(spoilt)
    assert bad.returncode != 0
    assert "grpc_health_chek" in bad.stdout + bad.stderr


def test_compose_and_kubernetes_give_the_processes_the_same_ports() -> None:
    (configmap,) = [
        document
        for document in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "configmap.yaml").read_text())
        if document
    ]
    environment = SERVICES["registry"]["environment"]
    for name in ("GATEHOUSE_JOIN_PORT", "GATEHOUSE_XDS_HEALTH_PORT"):
        assert configmap["data"][name] == environment[name]

"""Seed 000's gateway examples, applied as written with the CLI to a real `gatehouse server` whose
project has aws credentials in `server/config.yml`, reach running against moto and leave nothing.

A gateway runs only once its hosts' Envoys serve, so each instance moto runs is played as a host
(`cloudsim.Ec2Hosts`): it runs its user data, joins the server over mTLS and connects its Envoy."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.provisioner.aws_account import instances_of, inventory, shape_account
from tests.integration.provisioner.aws_emulator import REGION, MotoServer
from tests.integration.provisioner.cloudsim import Ec2Hosts
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real

EXAMPLE_GATEWAY = """
type: gateway
# A name of the gateway
name: example-gateway
# Gateways are bound to a specific backend and region
backend: aws
region: eu-west-1
# This domain will be used to access the endpoint
domain: example.com
"""

PRIVATE_GATEWAY = """
type: gateway
name: private-gateway
backend: aws
region: eu-west-1
domain: example.com
public_ip: false
certificate: null
"""

LARGER_GATEWAY = """
type: gateway
name: example-gateway
backend: aws
region: eu-west-1
instance_type: t3.large
domain: example.com
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer) -> Iterator[ServerProcess]:
    moto_server.reset()
    shape_account(moto_server, REGION)
    home = tmp_path_factory.mktemp("gatehouse-home")
    (home / "server").mkdir()
    (home / "server" / "config.yml").write_text(
        textwrap.dedent(
            f"""
            projects:
              - name: main
                backends:
                  - type: aws
                    creds:
                      type: access_key
                      access_key: AKIAEXAMPLEEXAMPLE00
                      secret_key: example
                    endpoint_url: {moto_server.url}
            """
        )
    )
    # moto answers on loopback, which projects' endpoints may reach only where the operator allows it.
    process = ServerProcess(home=home, extra_env={"GATEHOUSE_PROJECT_BACKEND_NETWORKS": "127.0.0.0/8"})
    process.start()
    with Ec2Hosts(moto_server.client("ec2"), tmp_path_factory.mktemp("hosts")):
        yield process
    process.stop()
    process.kill_data_plane()


def apply(server: ServerProcess, workdir: Path, name: str, text: str) -> Path:
    path = workdir / name
    path.write_text(text.lstrip())
    result = server.cli("apply", "-f", str(path), "-y")
    assert result.code == 0, result.stdout + result.stderr + server.log()[-3000:]
    return path


def gateway(server: ServerProcess, name: str) -> dict[str, object]:
    result = server.cli("gateway", "get", name, "--json")
    assert result.code == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout)
    return found


def test_the_seed_gateways_reach_running_on_aws_and_are_deleted_without_a_trace(
    server: ServerProcess, moto_server: MotoServer, tmp_path: Path
) -> None:
    before = inventory(moto_server)

    example = apply(server, tmp_path, "gateway.dstack.yml", EXAMPLE_GATEWAY)
    status = gateway(server, "example-gateway")["status"]
    assert isinstance(status, dict) and status["state"] == "GATEWAY_STATE_RUNNING"
    gateway_id = str(gateway(server, "example-gateway")["id"])
    [instance] = instances_of(moto_server, gateway_id)
    assert instance["InstanceType"] == "t3.micro"
    assert status["hostname"] == instance["PublicIpAddress"]

    private = apply(server, tmp_path, "private-gateway.dstack.yml", PRIVATE_GATEWAY)
    status = gateway(server, "private-gateway")["status"]
    assert isinstance(status, dict) and status["state"] == "GATEWAY_STATE_RUNNING"
    [instance] = instances_of(moto_server, str(gateway(server, "private-gateway")["id"]))
    assert "PublicIpAddress" not in instance and status["hostname"] == instance["PrivateIpAddress"]

    # The registry replaces a gateway whose host size changes: the old hosts go, new ones come.
    apply(server, tmp_path, "larger-gateway.dstack.yml", LARGER_GATEWAY)
    larger_id = str(gateway(server, "example-gateway")["id"])
    assert [i["InstanceType"] for i in instances_of(moto_server, larger_id)] == ["t3.large"]
    deadline = time.monotonic() + 30
    while instances_of(moto_server, gateway_id) and larger_id != gateway_id:
        assert time.monotonic() < deadline, "the replaced gateway's host was never removed"
        time.sleep(0.2)

    for path in (example, private):
        result = server.cli("delete", "-f", str(path), "-y")
        assert result.code == 0, result.stdout + result.stderr
    after = inventory(moto_server)
    assert {kind: after[kind] - before[kind] for kind in after} == {kind: set() for kind in after}


def test_a_backend_the_project_has_no_credentials_for_fails_the_gateway_in_one_line(
    server: ServerProcess, tmp_path: Path
) -> None:
    path = tmp_path / "gcp-gateway.dstack.yml"
    path.write_text("type: gateway\nname: gcp-gateway\nbackend: gcp\nregion: europe-west4\n")
    result = server.cli("apply", "-f", str(path), "-y")
    assert result.code == 1
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(
        'error: gateway "gcp-gateway" failed: project main has no gcp backend configured: '
        "add it with `gatehouse backend add --config FILE` or in "
    )
    assert server.cli("delete", "-f", str(path), "-y").code == 0


def test_credentials_added_with_the_cli_provision_a_gateway(
    server: ServerProcess, moto_server: MotoServer, tmp_path: Path
) -> None:
    assert server.cli("project", "create", "cloudy").code == 0
    creds = tmp_path / "aws.yml"
    creds.write_text(
        "type: aws\n"
        "creds: {type: access_key, access_key: AKIAEXAMPLEEXAMPLE00, secret_key: very-secret}\n"
        f"endpoint_url: {moto_server.url}\n"
    )
    added = server.cli("--project", "cloudy", "backend", "add", "--config", str(creds))
    assert added.code == 0 and added.stdout.strip() == "Saved the aws backend of project cloudy."
    listed = server.cli("--project", "cloudy", "backend", "list", "--json")
    assert [b["type"] for b in json.loads(listed.stdout)["backends"]] == ["aws"]
    assert "very-secret" not in listed.stdout and "AKIA" not in listed.stdout
    stored = (server.home / "server" / "data" / "gatehouse.sqlite").read_bytes()
    assert b"very-secret" not in stored
    path = tmp_path / "cloudy.dstack.yml"
    path.write_text(PRIVATE_GATEWAY.replace("private-gateway", "cloudy-gateway"))
    result = server.cli("--project", "cloudy", "apply", "-f", str(path), "-y")
    assert result.code == 0, result.stderr + server.log()
    assert "running" in result.stdout
    assert server.cli("--project", "cloudy", "delete", "-f", str(path), "-y").code == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type: mars\n", "backend `type` must be one of aws, gcp, azure, kubernetes"),
        ("type: gcp\n", "gcp backend: project_id: Field required"),
        ("type: aws\ncreds: [1,\n", "bad.yml:3: invalid YAML"),
    ],
)
def test_a_bad_backend_is_one_line(server: ServerProcess, tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.yml"
    config.write_text(text)
    result = server.cli("backend", "add", "--config", str(config))
    lines = result.stderr.strip().splitlines()
    assert result.code != 0 and len(lines) == 1 and expected in lines[0], result.stderr

"""A project's backend configuration stored before the registry refused such things (written here
straight into a real `gatehouse server`'s database) is refused again where the provisioner takes
it: the gateway fails with the one line saying why, and the command it names never runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from services.common.crypto import Cipher
from services.registry.models import BackendConfigRow, utcnow
from tests.support.backend_attacks import aws, gcp, kubeconfig, kubernetes
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(home=tmp_path_factory.mktemp("gatehouse-home"))
    process.start()
    yield process
    process.stop()


def store(server: ServerProcess, project: str, raw: dict[str, Any]) -> None:
    """Writes the configuration as an older registry would have, past today's checks."""
    assert server.cli("project", "create", project).code == 0
    cipher = Cipher((server.home / "server" / "encryption.key").read_bytes().strip())
    engine = create_engine(f"sqlite:///{server.home / 'server' / 'data' / 'gatehouse.sqlite'}")
    with Session(engine) as session, session.begin():
        session.add(
            BackendConfigRow(
                project_id=project,
                type=raw["type"],
                config_encrypted=cipher.encrypt(json.dumps(raw)),
                updated_at=utcnow(),
            )
        )
    engine.dispose()


def failure(server: ServerProcess, project: str, backend: str, workdir: Path) -> str:
    """Applies a gateway on `backend` in `project`; returns the line its failure is shown in."""
    path = workdir / f"{project}.dstack.yml"
    path.write_text(f"type: gateway\nname: gw\nbackend: {backend}\nregion: europe-west4\n")
    result = server.cli("--project", project, "apply", "-f", str(path), "-y")
    assert result.code == 1, result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    shown = server.cli("--project", project, "gateway", "get", "gw", "--json")
    status = json.loads(shown.stdout)["status"]
    assert status["state"] == "GATEWAY_STATE_FAILED" and status["message"] in line, (status, line)
    assert server.cli("--project", project, "delete", "-f", str(path), "-y").code == 0
    return line


def test_a_stored_exec_plugin_fails_the_gateway_and_never_runs(server: ServerProcess, tmp_path: Path) -> None:
    marker = tmp_path / "exec-ran"
    exec_plugin = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": "touch",
        "args": [str(marker)],
    }
    store(server, "exec-plugin", kubernetes(kubeconfig({"exec": exec_plugin})))
    line = failure(server, "exec-plugin", "kubernetes", tmp_path)
    assert line == (
        'error: gateway "gw" failed: project exec-plugin\'s kubernetes backend: '
        "kubeconfig.users[0].user.exec runs a command on the Gatehouse server: refused in a project's "
        "configuration; give `kubeconfig: {data: …}` whose user has a `token` or `client-certificate-data` "
        "and `client-key-data`, and whose cluster has `certificate-authority-data`"
    )
    assert marker.parent.is_dir() and not marker.exists()


@pytest.mark.parametrize(
    ("project", "raw", "expected"),
    [
        (
            "token-file",
            kubernetes(kubeconfig({"tokenFile": "/proc/self/environ"})),
            "kubeconfig.users[0].user.tokenFile names a file on the Gatehouse server",
        ),
        (
            "kube-loopback",
            kubernetes(kubeconfig(cluster={"server": "https://127.0.0.1:50051"})),
            "kubeconfig.clusters[0].cluster.server 127.0.0.1 is not a public address",
        ),
        (
            "gcp-external",
            gcp({"type": "external_account", "credential_source": {"file": "/proc/self/environ"}}),
            "creds.data.credential_source reads a file, runs a command or fetches a URL",
        ),
        (
            "aws-metadata",
            aws(endpoint_url="http://169.254.169.254/latest/"),
            "endpoint_url 169.254.169.254 is link-local",
        ),
        (
            "aws-ambient",
            {"type": "aws", "creds": {"type": "default"}},
            "creds of type default (or none given) act with the Gatehouse server's own cloud identity",
        ),
    ],
)
def test_a_stored_configuration_reaching_into_the_server_fails_the_gateway(
    server: ServerProcess, tmp_path: Path, project: str, raw: dict[str, Any], expected: str
) -> None:
    store(server, project, raw)
    line = failure(server, project, raw["type"], tmp_path)
    assert line.startswith(f'error: gateway "gw" failed: project {project}\'s {raw["type"]} backend: ')
    assert expected in line and "refused in a project's configuration" in line, line


def test_one_projects_backend_is_never_used_for_another(server: ServerProcess, tmp_path: Path) -> None:
    marker = tmp_path / "exec-ran"
    store(server, "owner", kubernetes(kubeconfig({"exec": {"command": "touch", "args": [str(marker)]}})))
    assert server.cli("project", "create", "neighbour").code == 0
    line = failure(server, "neighbour", "kubernetes", tmp_path)
    assert line.startswith(
        'error: gateway "gw" failed: project neighbour has no kubernetes backend configured'
    )
    assert "owner" in failure(server, "owner", "kubernetes", tmp_path)
    assert marker.parent.is_dir() and not marker.exists()


def test_backend_add_refuses_an_exec_plugin_in_one_line_and_stores_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    assert server.cli("project", "create", "adder").code == 0
    config = tmp_path / "kube.yml"
    marker = tmp_path / "exec-ran"
    config.write_text(
        yaml.safe_dump(kubernetes(kubeconfig({"exec": {"command": "touch", "args": [str(marker)]}})))
    )
    result = server.cli("--project", "adder", "backend", "add", "--config", str(config))
    assert result.code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: kubernetes backend: kubeconfig.users[0].user.exec runs a command on the Gatehouse server: "
        "refused in a project's configuration; give `kubeconfig: {data: …}` whose user has a `token` or "
        "`client-certificate-data` and `client-key-data`, and whose cluster has `certificate-authority-data`"
    ]
    listed = server.cli("--project", "adder", "backend", "list", "--json")
    assert listed.code == 0 and json.loads(listed.stdout).get("backends", []) == []
    assert marker.parent.is_dir() and not marker.exists()

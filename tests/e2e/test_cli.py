"""The CLI as a user types it, against a real `gatehouse server`: every command group, prompts
answered on stdin, --json shapes and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.gateways import gateway_host
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_whoami(server: ServerProcess) -> None:
    shown = server.cli("whoami")
    assert shown.code == 0 and shown.stdout.split()[:3] == ["USER", "ADMIN", "PROJECTS"]
    as_json = json.loads(server.cli("whoami", "--json").stdout)
    assert as_json == {"user": "admin", "projects": ["main"], "admin": True}


def test_users_and_projects(server: ServerProcess) -> None:
    created = server.cli("user", "create", "carol")
    assert created.code == 0
    token = created.stdout.split()[-1]
    assert token.startswith("gh_")
    as_carol = {"GATEHOUSE_TOKEN": token}
    assert (
        server.cli("project", "create", "carols", env=as_carol).stdout.strip()
        == "Created the project carols."
    )
    assert "carols" in server.cli("project", "list", env=as_carol).stdout
    assert server.cli("project", "set-member", "carols", "admin", "--role", "member", env=as_carol).code == 0
    members = json.loads(server.cli("project", "list", "--json", env=as_carol).stdout)["projects"][0][
        "members"
    ]
    assert {member["user"]: member["role"] for member in members} == {"admin": "member", "carol": "admin"}
    # Refused deletion leaves the project; the prompt's "n" changes nothing.
    declined = server.cli("project", "delete", "carols", stdin="n\n", env=as_carol)
    assert declined.code == 0 and "Delete the project carols? [y/n]" in declined.stdout
    assert "carols" in server.cli("project", "list", env=as_carol).stdout
    assert server.cli("project", "delete", "carols", stdin="y\n", env=as_carol).code == 0
    assert "carols" not in server.cli("project", "list").stdout
    listed = server.cli("user", "list")
    assert "carol" in listed.stdout and "admin" in listed.stdout
    assert server.cli("user", "revoke", "carol", "-y").stdout.strip() == "Revoked 1 token(s) of carol."
    refused = server.cli("whoami", env=as_carol)
    assert refused.code == 1 and "token is not valid" in one_error_line(refused.stderr)


def test_secrets(server: ServerProcess) -> None:
    assert (
        server.cli("secrets", "add", "API_KEY", "s3cr3t").stdout.strip()
        == "Added the secret API_KEY to project main."
    )
    listed = server.cli("secrets")
    assert listed.stdout.split() == ["NAME", "API_KEY"] and "s3cr3t" not in listed.stdout
    assert server.cli("secrets", "delete", "API_KEY", stdin="y\n").code == 0
    assert server.cli("secrets", "list").stdout.split() == ["NAME"]


def test_gateway_commands(server: ServerProcess) -> None:
    created = server.cli("gateway", "create", "--backend", "local", "--region", "local", "--name", "cli-gw")
    assert created.code == 0, created.stderr + server.log()
    assert "Creating gateway, it may take some time..." in created.stderr
    got = json.loads(server.cli("gateway", "get", "cli-gw", "--json").stdout)
    # A loopback address of its own, which the control plane (127.0.0.1) does not use.
    assert created.stdout.split() == ["NAME", "ADDRESS", "cli-gw", got["status"]["hostname"]]
    assert got["status"]["hostname"].startswith("127.") and got["status"]["hostname"] != "127.0.0.1"
    assert got["name"] == "cli-gw" and got["status"]["state"] == "GATEWAY_STATE_RUNNING"
    assert got["spec"]["backend"] == "local" and got["spec"]["default"] is True
    verbose = server.cli("gateway", "-v")
    assert verbose.stdout.split()[:10] == [
        "BACKEND", "REGION", "NAME", "HOSTNAME", "DOMAIN", "DEFAULT", "STATUS", "CREATED", "ENVOYS", "ERROR",
    ]  # fmt: skip
    second = server.cli("gateway", "create", "--backend", "local", "--region", "local", "--name", "cli-gw2")
    assert second.code == 0
    assert second.stdout.split()[-1] not in (got["status"]["hostname"], "127.0.0.1")
    assert server.cli("gateway", "update", "cli-gw2", "--set-default").code == 0
    defaults = {
        gw["name"]: gw["spec"].get("default", False)
        for gw in json.loads(server.cli("gateway", "--json").stdout)["gateways"]
    }
    assert defaults == {"cli-gw": False, "cli-gw2": True}
    for name in ("cli-gw", "cli-gw2"):
        assert server.cli("gateway", "delete", name, "-y").code == 0


def test_apply_asks_and_shows_the_plan(server: ServerProcess, tmp_path: Path) -> None:
    config = tmp_path / "gw.dstack.yml"
    config.write_text("type: gateway\nname: plan-gw\nbackend: local\nregion: local\n")
    declined = server.cli("apply", "-f", str(config), stdin="n\n")
    assert declined.code == 0 and "The plan-gw doesn't exist. Create it? [y/n]: " in declined.stdout
    assert "Backend" in declined.stdout and "local" in declined.stdout
    assert "plan-gw" not in server.cli("gateway", "list").stdout
    accepted = server.cli("apply", "-f", str(config), stdin="y\n")
    assert accepted.code == 0 and "running" in accepted.stdout
    again = server.cli("apply", "-f", str(config), "-y")
    assert "No configuration changes." in again.stdout
    config.write_text("type: gateway\nname: plan-gw\nbackend: local\nregion: local\ndomain: example.com\n")
    updated = server.cli("apply", "-f", str(config), stdin="y\n")
    assert updated.code == 0 and "will be updated in place" in updated.stdout and "domain" in updated.stdout
    assert f"*.example.com A {gateway_host(server, 'plan-gw')}" in updated.stdout
    assert server.cli("delete", "-f", str(config), stdin="y\n").code == 0


def test_replicas_services_and_certificates(server: ServerProcess, tmp_path: Path) -> None:
    gateway = tmp_path / "g.dstack.yml"
    gateway.write_text("type: gateway\nname: rep-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(gateway), "-y").code == 0
    service = tmp_path / "s.dstack.yml"
    service.write_text("type: service\nname: ext\ngateway: rep-gw\nport: '7801:8000'\n")
    assert server.cli("apply", "-f", str(service), "-y", "-d").code == 0
    registered = server.cli(
        "replica", "register", "--service", "ext", "--id", "ext-1", "--address", "10.0.0.9:8000", "--ready"
    )
    assert registered.code == 0 and registered.stdout.split() == [
        "ID",
        "ADDRESS",
        "READY",
        "ext-1",
        "10.0.0.9:8000",
        "✓",
    ]
    assert "10.0.0.9:8000" in server.cli("replica", "list", "ext").stdout
    shown = server.cli("service", "get", "ext")
    assert "1/1" in shown.stdout and "rep-gw" in shown.stdout
    assert server.cli("certificate", "list").stdout.split()[:5] == [
        "HOSTNAMES",
        "ISSUER",
        "STATE",
        "EXPIRES",
        "MESSAGE",
    ]
    assert server.cli("service", "delete", "ext", "-y").stdout.strip() == "Deleted the service ext."
    assert server.cli("delete", "-f", str(gateway), "-y").code == 0


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["gateway", "get", "nope"], 1, 'error: gateway "nope" not found in project "main"'),
        (["gateway", "get"], 2, "error: the following arguments are required: NAME"),
        (["gateway", "frobnicate"], 2, "invalid choice"),
        (["--server", "127.0.0.1:1", "gateway"], 1, "cannot reach the Gatehouse server at 127.0.0.1:1"),
        (["--project", "elsewhere", "gateway"], 1, 'project "elsewhere" not found'),
        (["secrets", "add", "1bad", "v"], 1, "is not a secret name"),
    ],
)
def test_errors_are_one_line(server: ServerProcess, args: list[str], code: int, expected: str) -> None:
    result = server.cli(*args)
    assert result.code == code
    assert expected in one_error_line(result.stderr)


def test_completion(server: ServerProcess) -> None:
    script = server.cli("completion", "bash")
    assert script.code == 0 and "gatehouse" in script.stdout and "gateway" in script.stdout


def test_ctrl_c_while_waiting_offers_to_delete_what_is_being_created(
    server: ServerProcess, tmp_path: Path
) -> None:
    import signal
    import subprocess
    import time

    from tests.support.server import GATEHOUSE

    gateway = tmp_path / "g.dstack.yml"
    gateway.write_text("type: gateway\nname: int-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(gateway), "-y").code == 0
    service = tmp_path / "slow.dstack.yml"
    # The replica never opens its port, so apply keeps waiting until interrupted.
    service.write_text(
        "type: service\nname: slow\ngateway: int-gw\nport: '7901:7902'\ncommands: ['sleep 600']\n"
    )
    process = subprocess.Popen(
        [GATEHOUSE, "apply", "-f", str(service)],
        env=server.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    process.stdin.write(b"y\n")  # create it
    process.stdin.flush()
    deadline = time.monotonic() + 20
    while "slow" not in server.cli("service", "list").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(input=b"y\n", timeout=30)
    assert process.returncode == 130, stderr.decode()
    assert "Delete the service slow that is being created? [y/n]" in stdout.decode()
    assert "Traceback" not in stderr.decode()
    assert "slow" not in server.cli("service", "list").stdout
    assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0


def test_gateway_create_says_it_takes_time_only_once_accepted(server: ServerProcess) -> None:
    refused = server.cli("gateway", "create", "--name", "bad-domain-gw", "--domain", "not a domain")
    assert refused.code == 1 and refused.stdout == ""
    assert "is not a DNS name" in one_error_line(refused.stderr)  # and no "Creating gateway..."
    assert "bad-domain-gw" not in server.cli("gateway", "list").stdout


def test_a_closed_pipe_ends_quietly(server: ServerProcess) -> None:
    """`gatehouse gateway list --json | head -1`: the reader leaves before the answer is written."""
    import os
    import subprocess

    from tests.support.server import GATEHOUSE

    read_end, write_end = os.pipe()
    with subprocess.Popen(
        [GATEHOUSE, "gateway", "list", "--json"], env=server.env, stdout=write_end, stderr=subprocess.PIPE
    ) as process:
        os.close(write_end)
        os.close(read_end)
        assert process.stderr is not None
        assert process.wait(timeout=60) == 141
        assert process.stderr.read() == b""

"""`gatehouse service access-log`: requests through a real Envoy reach gateway_xds over gRPC ALS and
the service's log, each under its own service (two services, body markers), with no credential in
them (no header, query values redacted); `--follow` shows new requests; another project's member
cannot read them."""

from __future__ import annotations

import select
import subprocess
import time
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.server import GATEHOUSE, ServerProcess

pytestmark = pytest.mark.real

SECRET = "s3cret-query-value"


def _apply(server: ServerProcess, path: Path, text: str) -> None:
    path.write_text(text)
    done = server.cli("apply", "-f", str(path), "-y")
    assert done.code == 0, done.stderr + server.log()[-3000:]


def _service(name: str, port: int, auth: bool) -> str:
    return (
        f'type: service\nname: {name}\ngateway: al-gw\nport: "{port}:{free_port()}"\n'
        f"auth: {str(auth).lower()}\n"
        f'commands: ["echo marker-{name} > index.html && python -m http.server $PORT"]\n'
    )


def _log(server: ServerProcess, service: str) -> str:
    done = server.cli("service", "access-log", service, "--tail", "200")
    assert done.code == 0, done.stderr
    return done.stdout


def _until_in(server: ServerProcess, service: str, text: str, within: float = 20.0) -> str:
    deadline = time.monotonic() + within
    shown = _log(server, service)
    while text not in shown and time.monotonic() < deadline:
        time.sleep(0.3)
        shown = _log(server, service)
    return shown


def test_requests_show_in_their_services_log_without_credentials(
    server: ServerProcess, tmp_path: Path
) -> None:
    _apply(server, tmp_path / "gw.dstack.yml", "type: gateway\nname: al-gw\nbackend: local\nregion: local\n")
    auth_port, open_port = free_port(), free_port()
    _apply(server, tmp_path / "a.dstack.yml", _service("al-auth", auth_port, True))
    _apply(server, tmp_path / "o.dstack.yml", _service("al-open", open_port, False))
    host = gateway_host(server, "al-gw")

    for page in range(5):
        url = f"http://{host}:{auth_port}/index.html?token={SECRET}&page={page}"
        status, body = fetch(url, token=server.token)
        assert (status, body.strip()) == (200, "marker-al-auth")
    assert fetch(f"http://{host}:{auth_port}/refused?api_key={SECRET}")[0] == 401
    status, body = fetch(f"http://{host}:{open_port}/index.html?only=open")
    assert (status, body.strip()) == (200, "marker-al-open")

    shown = _until_in(server, "al-auth", "/refused")
    lines = [line for line in shown.splitlines() if "/index.html" in line]
    assert len(lines) == 5, shown
    assert all(" GET /index.html?token=REDACTED&page=REDACTED 200 " in line for line in lines), shown
    assert all("replica=" in line and "replica=-" not in line for line in lines), shown
    assert any(
        " GET /refused?api_key=REDACTED 401 " in line and "replica=-" in line for line in shown.splitlines()
    )
    for leaked in (SECRET, server.token, "Bearer", "authorization"):
        assert leaked not in shown
    # Each service's log holds its own requests only.
    assert "only=REDACTED" in _until_in(server, "al-open", "only=")
    assert "only=" not in shown and "token=" not in _log(server, "al-open")


def test_follow_shows_new_requests(server: ServerProcess) -> None:
    host = gateway_host(server, "al-gw")
    open_port = int(
        next(u for u in server.cli("service", "get", "al-open").stdout.split() if u.startswith("http"))
        .rsplit(":", 1)[1]
        .strip("/")
    )
    follower = subprocess.Popen(
        [GATEHOUSE, "service", "access-log", "al-open", "--follow", "--tail", "1"],
        env=server.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # the first answer is printed; what follows comes from new requests
        assert fetch(f"http://{host}:{open_port}/followed-marker")[0] == 404
        deadline = time.monotonic() + 20
        seen = ""
        assert follower.stdout is not None
        while "/followed-marker" not in seen and time.monotonic() < deadline:
            readable, _, _ = select.select([follower.stdout], [], [], 0.5)
            if readable:
                seen += follower.stdout.readline()
        assert " GET /followed-marker 404 " in seen, seen
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        if follower.stdout is not None:
            follower.stdout.close()


def test_another_projects_member_cannot_read_the_log(server: ServerProcess) -> None:
    token = server.cli("user", "create", "erin-al").stdout.split()[-1]
    erin = {"GATEHOUSE_TOKEN": token}
    assert server.cli("project", "create", "erin-al", env=erin).code == 0
    refused = server.cli("service", "access-log", "al-auth", "--project", "main", env=erin)
    assert refused.code == 1 and "not a member" in refused.stderr and "Traceback" not in refused.stderr
    assert refused.stdout == ""
    # Her own project has no service of that name: the same name reveals nothing of main's.
    missing = server.cli("service", "access-log", "al-auth", "--project", "erin-al", env=erin)
    assert missing.code == 1 and "not found" in missing.stderr

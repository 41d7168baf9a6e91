"""HTTPS as a user gets it: a gateway with a domain, a service on it, a certificate from a real ACME
CA (Pebble) through HTTP-01 answered by the gateway's own Envoy, served over TLS by that Envoy,
plain HTTP redirected, renewals served without a failed request, auth with an API key, and a replica
behind NAT whose agent reaches the gateway on its HTTPS port only."""

from __future__ import annotations

import http.client
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.probes import free_port
from services.provisioner.backends.base import BackendError
from services.provisioner.backends.local.gateway import envoy_binary
from tests.e2e.test_agent import hidden_replica, start_agent, stop_agent
from tests.support.https import TlsAnswer, fetch_tls
from tests.support.pebble import Pebble
from tests.support.real import require_real
from tests.support.server import ServerProcess

__all__ = ["hidden_replica"]
pytestmark = pytest.mark.real

DOMAIN = "example.test"
# Short-lived certificates, renewed at two thirds of their life: the renewal test sees one.
VALIDITY_SECONDS = 15
DEADLINE_SECONDS = 60.0


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    ca = Pebble(tmp_path_factory.mktemp("pebble"), validity_seconds=VALIDITY_SECONDS)
    ca.start()
    yield ca
    ca.stop()


@pytest.fixture(scope="module")
def https_server(pebble: Pebble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    try:
        envoy_binary()
    except BackendError as error:
        require_real(str(error))
    process = ServerProcess(
        home=tmp_path_factory.mktemp("gatehouse-https"),
        # Pebble validates HTTP-01 on this port of 127.0.0.1, which its DNS gives for every name.
        http_port=pebble.http_port,
        extra_env={
            "GATEHOUSE_ACME_DIRECTORY": pebble.directory_url,
            "GATEHOUSE_ACME_CA_BUNDLE": str(pebble.ca_bundle),
            "GATEHOUSE_DNS_SERVER": pebble.dns_server,
        },
    )
    process.start()
    yield process
    process.stop()
    process.kill_data_plane()


def apply(server: ServerProcess, directory: Path, name: str, text: str) -> None:
    path = directory / f"{name}.dstack.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    result = server.cli("apply", "-f", str(path), "-y")
    assert result.code == 0, result.stderr + server.log()[-3000:]


def certificate_state(server: ServerProcess, service: str) -> str:
    result = server.cli("service", "get", service, "--json")
    assert result.code == 0, result.stderr
    return str(json.loads(result.stdout).get("status", {}).get("certificate", ""))


def wait_https(server: ServerProcess, pebble: Pebble, host: str) -> TlsAnswer:
    root = pebble.root_pem()
    deadline = time.monotonic() + DEADLINE_SECONDS
    answer = fetch_tls(server.https_port, host, root)
    while answer.status != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = fetch_tls(server.https_port, host, root)
    return answer


def plain_get(port: int, host: str, path: str = "/") -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


@pytest.fixture(scope="module")
def web(https_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A service on a gateway with a domain (Let's Encrypt policy by default, here Pebble)."""
    directory = tmp_path_factory.mktemp("https-configs")
    apply(
        https_server,
        directory,
        "gateway",
        # Pebble's DNS answers 127.0.0.1 for every name: the gateway binds there, as a user points the
        # domain's records at their gateway.
        f"type: gateway\nname: tls-gw\nbackend: local\nregion: local\ndomain: {DOMAIN}\naddress: 127.0.0.1\n",
    )
    port = free_port()
    apply(
        https_server,
        directory,
        "web",
        f"""
        type: service
        name: web
        gateway: tls-gw
        port: {port}
        auth: false
        commands:
          - python -m http.server {port}
        """,
    )
    return f"web.{DOMAIN}"


def test_a_service_gets_a_certificate_and_answers_over_https(
    https_server: ServerProcess, pebble: Pebble, web: str
) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    state = certificate_state(https_server, "web")
    while not state.startswith("issued") and time.monotonic() < deadline:
        time.sleep(0.2)
        state = certificate_state(https_server, "web")
    assert state.startswith("issued"), f"certificate: {state!r}\n" + https_server.log()[-3000:]
    answer = wait_https(https_server, pebble, web)
    assert answer.status == 200, answer.body + https_server.log()[-3000:]
    assert "Directory listing" in answer.body


def test_plain_http_is_redirected_to_https(https_server: ServerProcess, pebble: Pebble, web: str) -> None:
    assert wait_https(https_server, pebble, web).status == 200
    status, headers = plain_get(https_server.http_port, web, "/index.html")
    assert status == 301
    assert headers["location"] == f"https://{web}:{https_server.https_port}/index.html"
    # ACME challenge paths are never redirected (an unknown token reaches the service: 404 there).
    assert plain_get(https_server.http_port, web, "/.well-known/acme-challenge/none")[0] == 404


def test_renewals_are_served_without_a_failed_request(
    https_server: ServerProcess, pebble: Pebble, web: str
) -> None:
    root = pebble.root_pem()
    first = wait_https(https_server, pebble, web)
    assert first.status == 200 and first.not_before is not None
    # A renewal, not a certificate issued about when the first was.
    renewed_after = first.not_before + VALIDITY_SECONDS / 2
    answers = [first]
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (answers[-1].not_before or 0) < renewed_after and time.monotonic() < deadline:
        time.sleep(0.02)
        answers.append(fetch_tls(https_server.https_port, web, root))
    assert (answers[-1].not_before or 0) >= renewed_after, "no renewal in time\n" + https_server.log()[-3000:]
    assert [a for a in answers if a.status != 200] == []
    assert answers[-1].serial != first.serial


def test_a_service_with_auth_opens_to_its_api_key(
    https_server: ServerProcess, pebble: Pebble, tmp_path_factory: pytest.TempPathFactory, web: str
) -> None:
    port = free_port()
    config = f"""
        type: service
        name: private
        gateway: tls-gw
        port: {port}
        commands: ["python -m http.server {port}"]
        """
    apply(https_server, tmp_path_factory.mktemp("private"), "private", config)
    host = f"private.{DOMAIN}"
    root = pebble.root_pem()
    # Certificate first (401 means TLS works and auth answered).
    deadline = time.monotonic() + DEADLINE_SECONDS
    answer = fetch_tls(https_server.https_port, host, root)
    while answer.status != 401 and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = fetch_tls(https_server.https_port, host, root)
    assert answer.status == 401 and json.loads(answer.body)["error"] == "unauthorized", answer
    created = https_server.cli("key", "create", "private", "--json")
    assert created.code == 0, created.stderr
    key = json.loads(created.stdout)["key"]
    # The key opens the service once its hash reaches the gateway's Envoy.
    deadline = time.monotonic() + DEADLINE_SECONDS
    allowed = fetch_tls(https_server.https_port, host, root, headers={"Authorization": f"Bearer {key}"})
    while allowed.status != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        allowed = fetch_tls(https_server.https_port, host, root, headers={"Authorization": f"Bearer {key}"})
    assert allowed.status == 200 and "Directory listing" in allowed.body
    # The CLI's own token (the admin's) opens it too.
    admin = fetch_tls(
        https_server.https_port, host, root, headers={"Authorization": f"Bearer {https_server.token}"}
    )
    assert admin.status == 200


def test_an_agent_reaches_the_gateway_on_its_https_port_beside_the_public_traffic(
    https_server: ServerProcess, pebble: Pebble, web: str, tmp_path: Path, hidden_replica: int
) -> None:
    service = tmp_path / "nat.dstack.yml"
    service.write_text(f"type: service\nname: nat\ngateway: tls-gw\nport: {hidden_replica}\nauth: false\n")
    # -d: its replica comes with the agent, started after.
    applied = https_server.cli("apply", "-f", str(service), "-y", "-d")
    assert applied.code == 0, applied.stderr
    agent = start_agent(https_server, hidden_replica, stream=False)
    try:
        root, host = pebble.root_pem(), f"nat.{DOMAIN}"
        deadline = time.monotonic() + DEADLINE_SECONDS
        answer = fetch_tls(https_server.https_port, host, root, "/hello.txt")
        while answer.status != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            answer = fetch_tls(https_server.https_port, host, root, "/hello.txt")
        assert (answer.status, answer.body) == (200, "hello from behind NAT"), answer
        # The other service on the same port still answers from its own replica.
        assert "Directory listing" in wait_https(https_server, pebble, web).body
    finally:
        out = stop_agent(agent)
    # The agent was told the gateway's HTTPS port, not the tunnel port.
    assert f"keeps tunnels open to 127.0.0.1:{https_server.https_port})".encode() in out, out

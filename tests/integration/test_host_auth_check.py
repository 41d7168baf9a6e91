"""The auth check as Envoy runs it (translate/host_auth.py, no control plane at all: the translated
resources given statically): SHA-256 in Lua against hashlib over every padding boundary, and what an
attacker may send in Authorization."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import http.client
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway_xds.ir.backends import Endpoint
from gateway_xds.ir.policies import Authorization, OpeningCredential
from gateway_xds.testing.builders import DOMAIN, domain_gateway, service_name
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.static import static_bootstrap
from gateway_xds.testing.upstream import Upstream
from gateway_xds.translate.host_auth import MAX_CREDENTIAL_BYTES
from services.provisioner.envoy_bootstrap import BootstrapParams
from tests.support.real import require_real

pytestmark = pytest.mark.real

# Around SHA-256's padding boundaries (55/56 bytes fit one block or not), two blocks, the longest
# value hashed, and multi-byte UTF-8.
LENGTHS = (1, 43, 55, 56, 63, 64, 65, 119, 120, 128, MAX_CREDENTIAL_BYTES)
# Each value n bytes long, none a prefix of another.
SECRETS = {f"len-{n}": (f"s{n}-" + "k" * n)[:n] for n in LENGTHS} | {"utf8": "clé-🔑-" + "é" * 20}
TOO_LONG = "t" * (MAX_CREDENTIAL_BYTES + 1)


@dataclass
class Gateway:
    port: int
    replica: Upstream
    envoy: EnvoyProcess

    def request(self, headers: list[tuple[str, str]], path: str = "/headers") -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.putrequest("GET", path, skip_host=True)
            connection.putheader("Host", f"{service_name(0)}.{DOMAIN}")
            for name, value in headers:
                connection.putheader(name, value.encode())
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def principal(name: str) -> str:
    return f"user:{name}"


@pytest.fixture(scope="module")
def replica() -> Iterator[Upstream]:
    with Upstream(b"checked replica") as upstream:
        yield upstream


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, replica: Upstream) -> AsyncIterator[Gateway]:
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    port = free_port()
    ir = domain_gateway(1, endpoints=(Endpoint("127.0.0.1", replica.port),), port=port)
    (listener,) = ir.listeners
    values = {**SECRETS, "too-long": TOO_LONG}
    credentials = tuple(
        OpeningCredential(hashlib.sha256(value.encode()).hexdigest(), principal(name))
        for name, value in values.items()
    )
    vhost = dataclasses.replace(
        listener.virtual_hosts[0], authorization=Authorization("main", "svc-1", credentials)
    )
    ir = dataclasses.replace(ir, listeners=(dataclasses.replace(listener, virtual_hosts=(vhost,)),))
    work = tmp_path_factory.mktemp("host-auth-envoy")
    empty = Path(work / "empty.yaml")
    empty.write_text("")
    params = BootstrapParams(ir.gateway_id, 0, "127.0.0.1", free_port(), admin_port=free_port())
    envoy = EnvoyProcess(binary, work, static_bootstrap(ir, params, empty))
    envoy.start()
    try:
        await asyncio.to_thread(envoy.wait_ready)
        yield Gateway(port, replica, envoy)
    finally:
        envoy.stop()


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_the_lua_sha256_matches_hashlib_over_every_padding_boundary(gateway: Gateway, name: str) -> None:
    status, body = gateway.request([("Authorization", f"Bearer {SECRETS[name]}")])
    assert status == 200, (status, body[:300], gateway.envoy.log()[-2000:])
    seen = json.loads(body)
    assert seen["x-gatehouse-principal"] == principal(name) and "authorization" not in seen
    # One byte more or less is another hash.
    assert gateway.request([("Authorization", f"Bearer {SECRETS[name]}x")])[0] == 401
    assert gateway.request([("Authorization", f"Bearer {SECRETS[name][:-1]}")])[0] == 401


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        # The scheme in any case, the value trimmed.
        ([("Authorization", f"bearer {SECRETS['len-43']}")], 200),
        ([("Authorization", f"BEARER   {SECRETS['len-43']}  ")], 200),
        # Not a bearer credential, or nothing.
        ([("Authorization", f"Basic {SECRETS['len-43']}")], 401),
        ([("Authorization", f"Bearer{SECRETS['len-43']}")], 401),
        ([("Authorization", "Bearer ")], 401),
        ([], 401),
        # Longer than any credential: refused without hashing, even though its hash is in the table.
        ([("Authorization", f"Bearer {TOO_LONG}")], 401),
        # Two credentials: not one of them.
        (
            [
                ("Authorization", f"Bearer {SECRETS['len-43']}"),
                ("Authorization", f"Bearer {SECRETS['len-1']}"),
            ],
            401,
        ),
        # The table's keys are hashes: sending one is not sending the credential.
        ([("Authorization", f"Bearer {hashlib.sha256(SECRETS['len-43'].encode()).hexdigest()}")], 401),
        # A principal or a refusal mark claimed by the client.
        ([("Authorization", f"Bearer {SECRETS['len-43']}"), ("X-Gatehouse-Principal", "user:admin")], 200),
        ([("X-Gatehouse-Principal", "user:len-43")], 401),
    ],
)
def test_what_a_client_may_send(gateway: Gateway, headers: list[tuple[str, str]], status: int) -> None:
    got, body = gateway.request(headers)
    assert got == status, (got, body[:300])
    if status == 200:
        seen = json.loads(body)
        assert seen["x-gatehouse-principal"] == principal("len-43") and "authorization" not in seen
    else:
        answer = json.loads(body)
        assert answer["error"] == "unauthorized" and "Bearer" in answer["message"]

"""The auth check as Envoy runs it (translate/host_auth.py, no control plane at all: the translated
resources given statically): SHA-256 in Lua against hashlib over every padding boundary, and what an
attacker may send in Authorization."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import http.client
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatehouse.envoy_bootstrap import BootstrapParams
from gateway_xds.ir.backends import Endpoint
from gateway_xds.ir.policies import Authorization, OpeningCredential
from gateway_xds.testing.builders import DOMAIN, domain_gateway, service_name
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.static import static_bootstrap
from gateway_xds.testing.upstream import Upstream
from gateway_xds.translate.host_auth import MAX_CACHED_CREDENTIALS, MAX_CREDENTIAL_BYTES
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

    def request(
        self, headers: list[tuple[str, str]], path: str = "/headers", service: int = 0
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.putrequest("GET", path, skip_host=True)
            connection.putheader("Host", f"{service_name(service)}.{DOMAIN}")
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


@contextlib.asynccontextmanager
async def checked_gateway(
    work: Path, replica: Upstream, tables: list[dict[str, str]], script: dict[str, str] | None = None
) -> AsyncIterator[Gateway]:
    """Envoy serving one service per table (name -> value of each credential that opens it), its
    check's script changed by `script` (text -> replacement) if given."""
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    port = free_port()
    ir = domain_gateway(len(tables), endpoints=(Endpoint("127.0.0.1", replica.port),), port=port)
    (listener,) = ir.listeners
    vhosts = []
    for index, (vhost, table) in enumerate(zip(listener.virtual_hosts, tables, strict=True)):
        credentials = tuple(
            OpeningCredential(hashlib.sha256(value.encode()).hexdigest(), principal(name))
            for name, value in table.items()
        )
        vhosts.append(
            dataclasses.replace(vhost, authorization=Authorization("main", f"svc-{index}", credentials))
        )
    ir = dataclasses.replace(ir, listeners=(dataclasses.replace(listener, virtual_hosts=tuple(vhosts)),))
    empty = work / "empty.yaml"
    empty.write_text("")
    params = BootstrapParams(ir.gateway_id, 0, "127.0.0.1", free_port(), admin_port=free_port())
    bootstrap = static_bootstrap(ir, params, empty)
    for text, replacement in (script or {}).items():
        rendered = json.dumps(bootstrap)
        assert text in rendered
        bootstrap = json.loads(rendered.replace(text, replacement))
    envoy = EnvoyProcess(binary, work, bootstrap)
    envoy.start()
    try:
        await asyncio.to_thread(envoy.wait_ready)
        yield Gateway(port, replica, envoy)
    finally:
        envoy.stop()


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, replica: Upstream) -> AsyncIterator[Gateway]:
    tables = [{**SECRETS, "too-long": TOO_LONG}]
    async with checked_gateway(tmp_path_factory.mktemp("host-auth-envoy"), replica, tables) as gateway:
        yield gateway


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


async def test_a_worker_whose_converted_tables_overflow_starts_over_and_still_answers_right(
    tmp_path: Path, replica: Upstream
) -> None:
    """Two services of two credentials each, and room for three: each table converted evicts the other."""
    tables = [{"ann": "ann's token", "amy": "amy's token"}, {"bob": "bob's token", "ben": "ben's token"}]
    cap = f"local MAX_CACHED_CREDENTIALS = {MAX_CACHED_CREDENTIALS}"
    script = {cap: "local MAX_CACHED_CREDENTIALS = 3"}
    async with checked_gateway(tmp_path, replica, tables, script) as gateway:
        for _ in range(5):
            for index, table in enumerate(tables):
                other = tables[1 - index]
                for name, value in table.items():
                    status, body = gateway.request([("Authorization", f"Bearer {value}")], service=index)
                    assert status == 200 and json.loads(body)["x-gatehouse-principal"] == principal(name)
                for value in other.values():
                    assert gateway.request([("Authorization", f"Bearer {value}")], service=index)[0] == 401


async def test_a_check_that_fails_refuses(tmp_path: Path, replica: Upstream) -> None:
    """Envoy lets a request through a Lua script that raises an error: the check refuses it instead."""
    broken = {f"local MAX_CREDENTIAL_BYTES = {MAX_CREDENTIAL_BYTES}": "local MAX_CREDENTIAL_BYTES = nil"}
    async with checked_gateway(tmp_path, replica, [{"ann": "ann's token"}], broken) as gateway:
        status, body = gateway.request([("Authorization", "Bearer ann's token")])
        assert status == 401 and json.loads(body)["error"] == "unauthorized"
        assert "auth check failed, request refused" in gateway.envoy.log()

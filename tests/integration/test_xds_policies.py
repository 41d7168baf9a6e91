"""Traffic policies enforced by a real Envoy configured by gateway_xds from a real registry: auth checked
by Envoy against the credential hashes it is sent, rate limits counted per client (by each Envoy, or shared by
the Envoys of a gateway's two hosts) after auth, per principal where there is auth, CORS preflights."""

from __future__ import annotations

import asyncio
import functools
import http.client
import ipaddress
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from gatehouse.client.connection import Stubs
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.app import XdsApp
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.upstream import Upstream
from services.common.settings import Settings
from services.provisioner.backends.local.network import NamespaceNetwork, namespaces_available
from tests.support.real import require_real
from tests.support.registry import LiveRegistry, live_registry

pytestmark = pytest.mark.real

DOMAIN = "policies.test"
DEADLINE_SECONDS = 20.0
ONE_A_MINUTE = 1 / 60


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class Gateway:
    registry: LiveRegistry
    envoy: EnvoyProcess
    port: int
    upstream: Upstream
    tokens: dict[str, str]
    gateway_id: str
    xds_port: int
    # Where this host's Envoy is reached (the gateway listens on all of each host's addresses).
    address: str = "127.0.0.1"

    async def request(
        self,
        service: str,
        path: str = "/",
        token: str | None = None,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
    ) -> Answer:
        sent = {"Host": f"{service}.{DOMAIN}", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return await asyncio.to_thread(self._request, method, path, sent, source)

    def _request(self, method: str, path: str, headers: dict[str, str], source: str) -> Answer:
        connection = http.client.HTTPConnection(
            self.address, self.port, timeout=5, source_address=(source, 0)
        )
        try:
            connection.request(method, path, headers=headers)
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
        finally:
            connection.close()

    async def until(self, check: Callable[[], Awaitable[Answer]], status: int, what: str) -> Answer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_SECONDS
        answer = await check()
        while answer.status != status and loop.time() < deadline:
            await asyncio.sleep(0.05)
            answer = await check()
        assert answer.status == status, f"{what}: {answer}\nEnvoy log:\n{self.envoy.log()[-3000:]}"
        return answer

    async def service(self, name: str, replica: Upstream | None = None, **spec: Any) -> resources_pb2.Service:
        """A service with one replica (the module's upstream unless given), live at the gateway once
        this returns (an admin's requests to / wait for it)."""
        driver = self.registry.driver
        service = await driver.service(name, "pol", 8000, **spec)
        await driver.replica(name, f"{name}-0", f"127.0.0.1:{(replica or self.upstream).port}")
        token = self.tokens["admin"] if spec.get("auth") else None
        await self.until(lambda: self.request(name, "/", token), 200, f"service {name} live")
        return service


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(b"hello from a replica") as server:
        yield server


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> AsyncIterator[Gateway]:
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    async with live_registry(tmp_path_factory.mktemp("policies-registry")) as registry:
        stubs = Stubs.connect(registry.address, registry.system_token)
        # On every address of this machine, for the gateway's second host (a network namespace of its
        # own, test_shared_rate_limits_…) to reach it at the host end of its veth, as a second VM would
        # reach the control plane. Only this machine's Envoys connect to it, over its own addresses.
        app = XdsApp.build(stubs, "0.0.0.0:0")
        running = asyncio.create_task(app.run())
        port = free_port()
        # Each host's Envoy binds every address of its own: loopback here, the second host's own address
        # in its namespace.
        reported = await registry.driver.running_gateway("pol", "0.0.0.0", port, domain=DOMAIN)
        params = BootstrapParams(reported.id, 0, "127.0.0.1", app.port, admin_port=free_port())
        envoy = EnvoyProcess(binary, tmp_path_factory.mktemp("policies-envoy"), render_bootstrap(params))
        envoy.start()
        try:
            await asyncio.to_thread(envoy.wait_ready)
            tokens = {"admin": registry.admin_token}
            yield Gateway(registry, envoy, port, upstream, tokens, reported.id, app.port)
        finally:
            envoy.stop()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await stubs.close()


async def test_auth_needs_a_members_token_or_the_services_own_key(gateway: Gateway) -> None:
    await gateway.service("secure", auth=True)
    await gateway.service("other", auth=True)
    member = await gateway.registry.user_token("ann", member=True)
    outsider = await gateway.registry.user_token("bob", member=False)
    key = await gateway.registry.admin.service_keys.Create(
        registry_pb2.CreateServiceKeyRequest(project="main", service="secure")
    )
    missing = await gateway.request("secure")
    assert missing.status == 401 and json.loads(missing.body)["error"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (await gateway.request("secure", token="not-a-token")).status == 401
    assert (await gateway.until(lambda: gateway.request("secure", token=outsider), 401, "outsider")).status
    allowed = await gateway.until(lambda: gateway.request("secure", "/headers", member), 200, "member")
    # The Gatehouse credential never reaches the replicas.
    assert "authorization" not in json.loads(allowed.body)
    await gateway.until(lambda: gateway.request("secure", token=key.key), 200, "the service's key")
    assert (await gateway.request("other", token=key.key)).status == 401


async def test_a_revoked_token_stops_working(gateway: Gateway) -> None:
    await gateway.service("revocable", auth=True)
    token = await gateway.registry.user_token("carl", member=True)
    await gateway.until(lambda: gateway.request("revocable", token=token), 200, "before revocation")
    await gateway.registry.admin.users.RevokeTokens(registry_pb2.RevokeTokensRequest(user="carl"))
    await gateway.until(lambda: gateway.request("revocable", token=token), 401, "after revocation")


async def test_open_services_and_acme_answers_need_no_token(gateway: Gateway) -> None:
    open_service = await gateway.service("public")
    assert (await gateway.request("public")).status == 200
    secured = await gateway.service("guarded", auth=True)
    challenge = resources_pb2.AcmeChallenge(
        token="tok_1", key_authorization="tok_1.thumb", gateway_id=secured.spec.gateway_id,
        hostname=secured.spec.hostname,
    )  # fmt: skip
    await gateway.registry.system.tls_certificates.PutChallenge(challenge)
    path = "/.well-known/acme-challenge/tok_1"
    answer = await gateway.until(lambda: gateway.request("guarded", path), 200, "the ACME answer")
    assert answer.body == "tok_1.thumb"
    assert (await gateway.request("guarded")).status == 401
    # A policy changes in place: the open service now needs a token.
    await gateway.registry.driver.service("public", "pol", 8000, auth=True)
    await gateway.until(lambda: gateway.request("public"), 401, "auth turned on")
    assert open_service.spec.hostname == f"public.{DOMAIN}"


async def test_model_services_answer_cors_preflights_without_a_token(gateway: Gateway) -> None:
    await gateway.service("chat", auth=True, model="tiny-llm")
    origin = "https://chat.example"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    answer = await gateway.request("chat", "/v1/chat/completions", method="OPTIONS", headers=preflight)
    assert answer.status == 200, answer
    assert answer.headers["access-control-allow-origin"] == origin
    assert "authorization" in answer.headers["access-control-allow-headers"]
    assert (await gateway.request("chat", "/v1/models", headers={"Origin": origin})).status == 401


async def burst(
    gateway: Gateway, count: int, path: str, service: str = "limited", **options: Any
) -> list[Answer]:
    return [await gateway.request(service, path, **options) for _ in range(count)]


def statuses(answers: list[Answer]) -> list[int]:
    return [answer.status for answer in answers]


async def test_rate_limits_count_each_client_against_its_prefix(gateway: Gateway) -> None:
    limits = [
        {"prefix": "/", "rps": ONE_A_MINUTE, "burst": 4},
        {
            "prefix": "/keyed",
            "rps": ONE_A_MINUTE,
            "burst": 1,
            "key": {"type": "header", "header": "X-Client"},
        },
        {"prefix": "/keyed/more", "rps": ONE_A_MINUTE, "burst": 2},
    ]
    await gateway.registry.driver.service("limited", "pol", 8000, rate_limits=limits)
    await gateway.registry.driver.replica("limited", "limited-0", f"127.0.0.1:{gateway.upstream.port}")

    async def from_elsewhere() -> Answer:
        # Waiting for the service spends another client's allowance (503s before the replica count).
        return await gateway.request("limited", "/probe", source="127.0.0.3")

    await gateway.until(from_elsewhere, 200, "the limited service")
    # burst + 1 at once per client IP, then 429 with the time to the next token (one a minute).
    answers = await burst(gateway, 10, "/probe")
    assert statuses(answers) == [200] * 5 + [429] * 5
    assert all(a.headers["retry-after"] == "60" for a in answers[5:])
    assert statuses(await burst(gateway, 6, "/probe", source="127.0.0.2")) == [200] * 5 + [429]
    # Per header value; requests without the header share one allowance.
    for client in ("a", "b"):
        assert statuses(await burst(gateway, 3, "/keyed/x", headers={"X-Client": client})) == [200, 200, 429]
    assert statuses(await burst(gateway, 3, "/keyed/x")) == [200, 200, 429]
    # The longest prefix wins.
    assert statuses(await burst(gateway, 4, "/keyed/more/x")) == [200] * 3 + [429]


@dataclass(frozen=True)
class SecondHost:
    gateway: Gateway  # its Envoy, reached at the host's own address
    host_end: str  # this machine's address on the host's veth: the host's default route


@pytest.fixture
async def second_host(
    gateway: Gateway, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SecondHost]:
    """Host 1 of the gateway, as on a second VM: a network namespace of its own, made by the local
    backend's own code, where its Envoy binds the gateway's listener on the host's own addresses and
    reaches gateway_xds (ADS, the shared rate limits) at the veth's host end, its default
    route. Its admin interface is a Unix socket, reached from here whatever the namespace."""
    if not namespaces_available():
        require_real("network namespaces need root and `ip` from iproute2")
    binary = envoy_binary()
    assert binary is not None
    network = NamespaceNetwork(ipaddress.IPv4Network(Settings.from_env().local_replica_subnet))
    directory = tmp_path_factory.mktemp("policies-host-1")
    envoy: EnvoyProcess | None = None
    try:
        host = await network.attach(directory)
        # The veth's two ends are the two addresses of a /31, the host end first (network.py).
        host_end = str(ipaddress.IPv4Address(host.address) - 1)
        params = BootstrapParams(
            gateway.gateway_id, 1, host_end, gateway.xds_port, admin_socket=str(directory / "admin.sock")
        )
        envoy = EnvoyProcess(
            binary, directory / "envoy", render_bootstrap(params), command_prefix=host.command_prefix
        )
        envoy.start()
        await asyncio.to_thread(envoy.wait_ready)
        yield SecondHost(replace(gateway, envoy=envoy, address=host.address), host_end)
    finally:
        if envoy is not None:
            envoy.stop()
        await network.detach(directory)


async def test_shared_rate_limits_hold_across_the_gateways_envoys(
    gateway: Gateway, second_host: SecondHost
) -> None:
    """One client sends to the gateway's two hosts in turn (its own requests, not the kernel's spread):
    a global limit is one count for both."""
    # One client both hosts see at one address: this machine, from its end of the second host's veth.
    # The first host is this machine: it listens there too.
    client = second_host.host_end
    hosts = (replace(gateway, address=client), second_host.gateway)
    limits = [
        {"prefix": "/", "rps": ONE_A_MINUTE, "burst": 5, "scope": "global"},
        {
            "prefix": "/keyed",
            "rps": ONE_A_MINUTE,
            "burst": 1,
            "key": {"type": "header", "header": "X-Client"},
            "scope": "global",
        },
    ]
    # The replica listens where both hosts reach it (the module's upstream is on this machine's loopback).
    with Upstream(b"hello from a replica both hosts reach", host=client) as replica:
        await gateway.registry.driver.service("shared", "pol", 8000, rate_limits=limits)
        await gateway.registry.driver.replica("shared", "shared-0", f"{client}:{replica.port}")
        probes = itertools.count()

        async def probe(host: Gateway) -> Answer:
            # A header value of its own each time, under /keyed: spends none of the allowances below.
            headers = {"X-Client": f"probe-{next(probes)}"}
            try:
                return await host.request("shared", "/keyed/probe", headers=headers, source=client)
            except OSError as error:  # the listener is not there yet
                return Answer(0, {}, str(error))

        for index, host in enumerate(hosts):
            await host.until(functools.partial(probe, host), 200, f"the shared service on host {index}")

        def served(host: Gateway) -> int:
            return sum(host.envoy.stats("cluster.svc_main_shared.upstream_rq_total").values())

        async def in_turn(count: int, path: str, **options: Any) -> list[Answer]:
            """`count` requests from the client, to host 0, host 1, host 0, …"""
            return [
                await hosts[i % len(hosts)].request("shared", path, source=client, **options)
                for i in range(count)
            ]

        before = [served(host) for host in hosts]
        answers = await in_turn(24, "/probe")
        # burst + 1 for the client whichever host it reached, then 429 with the time to the next token.
        assert statuses(answers) == [200] * 6 + [429] * 18, (
            statuses(answers),
            second_host.gateway.envoy.log()[-2000:],
        )
        assert all(a.headers["retry-after"] in ("59", "60") for a in answers[6:])
        after = [served(host) for host in hosts]
        assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3], "each host took its turns"
        # Per header value, and requests without it as one client, across both hosts.
        for value in ("a", "b"):
            assert (
                statuses(await in_turn(8, "/keyed/x", headers={"X-Client": value})) == [200, 200] + [429] * 6
            )
        assert statuses(await in_turn(8, "/keyed/x")) == [200, 200] + [429] * 6


# -- the order of checks: auth, then rate limits per principal ------------------------------------

# The limits below cover /api only: waiting for a service to be live (an admin's requests to /)
# spends none of them.
API = "/api"


@pytest.mark.parametrize(
    ("scope", "key"),
    [("local", {"type": "header", "header": "X-User"}), ("global", "ip_address")],
)
async def test_unauthenticated_floods_never_spend_a_principals_allowance(
    gateway: Gateway, scope: str, key: Any
) -> None:
    """Requests without a credential, carrying the victim's header (the key of the header-keyed limit)
    from the victim's address, are limited in a bucket of their own; each principal keeps its own
    allowance on each service, whatever header it sends."""
    limits = [{"prefix": API, "rps": ONE_A_MINUTE, "burst": 2, "key": key, "scope": scope}]
    vera = await gateway.registry.user_token(f"vera-{scope}", member=True)
    otto = await gateway.registry.user_token(f"otto-{scope}", member=True)
    as_vera = {"X-User": f"vera-{scope}"}
    with (
        Upstream(f"ledger-{scope} replica".encode()) as ledger,
        Upstream(f"vault-{scope} replica".encode()) as vault,
    ):
        replicas = {f"ledger-{scope}": ledger, f"vault-{scope}": vault}
        for name, replica in replicas.items():
            await gateway.service(name, replica, auth=True, rate_limits=limits)
        for name in replicas:
            flood = await burst(gateway, 6, f"{API}/flood", name, headers=as_vera)
            assert statuses(flood) == [401] * 3 + [429] * 3
            assert all(a.headers["retry-after"] in ("59", "60") for a in flood[3:])
        for name, replica in replicas.items():
            for token in (vera, otto):
                answers = await burst(gateway, 4, f"{API}/x", name, token=token, headers=as_vera)
                assert statuses(answers) == [200, 200, 200, 429], (name, token == vera, answers)
                assert [a.body for a in answers[:3]] == [replica.body.decode()] * 3
        # Another address's unauthenticated requests have their own bucket too.
        elsewhere = await burst(gateway, 4, f"{API}/flood", f"ledger-{scope}", source="127.0.0.5")
        assert statuses(elsewhere) == [401] * 3 + [429]


async def test_replicas_learn_the_principal_from_the_gateway_never_from_the_client(gateway: Gateway) -> None:
    await gateway.service("teller", auth=True)
    await gateway.service("lobby")
    wanda = await gateway.registry.user_token("wanda", member=True)
    key = await gateway.registry.admin.service_keys.Create(
        registry_pb2.CreateServiceKeyRequest(project="main", service="teller")
    )
    forged = {"X-Gatehouse-Principal": "user:admin"}
    # A new token opens the service once its hash reaches the gateway's Envoy.
    answer = await gateway.until(
        lambda: gateway.request("teller", "/headers", wanda, headers=forged), 200, "token"
    )
    as_wanda = json.loads(answer.body)
    assert as_wanda["x-gatehouse-principal"] == "user:wanda"
    with_key = await gateway.until(
        lambda: gateway.request("teller", "/headers", key.key, headers=forged), 200, "key"
    )
    assert json.loads(with_key.body)["x-gatehouse-principal"].startswith("key:")
    assert "x-gatehouse-principal" not in json.loads(
        (await gateway.request("lobby", "/headers", headers=forged)).body
    )


async def test_open_services_limit_per_address_or_header_whatever_principal_is_claimed(
    gateway: Gateway,
) -> None:
    limits = [
        {"prefix": API, "rps": ONE_A_MINUTE, "burst": 1},
        {
            "prefix": f"{API}/keyed",
            "rps": ONE_A_MINUTE,
            "burst": 1,
            "key": {"type": "header", "header": "X-User"},
        },
    ]
    with Upstream(b"kiosk replica") as kiosk, Upstream(b"booth replica") as booth:
        for name, replica in (("kiosk", kiosk), ("booth", booth)):
            await gateway.service(name, replica, rate_limits=limits)
            for source in ("127.0.0.6", "127.0.0.7"):
                for principal in ("user:kim", "user:lee"):
                    claimed = {"X-Gatehouse-Principal": principal}
                    answers = await burst(gateway, 2, f"{API}/x", name, headers=claimed, source=source)
                    assert statuses(answers) == ([200, 200] if principal == "user:kim" else [429, 429])
                    assert all(a.body == replica.body.decode() for a in answers if a.status == 200)
            for user in ("kim", "lee"):
                keyed = await burst(gateway, 3, f"{API}/keyed/x", name, headers={"X-User": user})
                assert statuses(keyed) == [200, 200, 429]
            seen = json.loads(
                (await gateway.request(name, "/headers", headers={"X-Gatehouse-Principal": "user:kim"})).body
            )
            assert "x-gatehouse-principal" not in seen

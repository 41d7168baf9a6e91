"""The gateway-side auth check: tokens of project members, API keys of one service, admins."""

from __future__ import annotations

import asyncio
import hashlib
import json

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from gatehouse.v1 import resources_pb2
from gateway_xds.authz.credentials import CredentialIndex
from gateway_xds.authz.server import AuthorizationServicer


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def index() -> CredentialIndex:
    result = CredentialIndex()
    result.replace(
        [
            resources_pb2.Credential(id="t1", hash=_hash("member-token"), user="ann", projects=["shop"]),
            resources_pb2.Credential(id="t2", hash=_hash("admin-token"), user="root", admin=True),
            resources_pb2.Credential(id="k1", hash=_hash("ghk_api"), service_id="svc-api"),
        ]
    )
    return result


@pytest.mark.parametrize(
    ("header", "project", "service", "allowed", "reason"),
    [
        ("Bearer member-token", "shop", "svc-api", True, ""),
        ("bearer member-token", "shop", "svc-web", True, ""),
        ("Bearer member-token", "other", "svc-x", False, 'not a member of project "other"'),
        ("Bearer admin-token", "anything", "svc-x", True, ""),
        ("Bearer ghk_api", "shop", "svc-api", True, ""),
        ("Bearer ghk_api", "shop", "svc-web", False, "another service"),
        ("Bearer nope", "shop", "svc-api", False, "not valid"),
        ("", "shop", "svc-api", False, "Authorization: Bearer"),
        ("Basic abc", "shop", "svc-api", False, "Authorization: Bearer"),
    ],
)
def test_decisions(
    index: CredentialIndex, header: str, project: str, service: str, allowed: bool, reason: str
) -> None:
    decision = index.decide(header, project, service)
    assert decision.allowed is allowed and reason in decision.reason


async def test_the_check_over_grpc(index: CredentialIndex) -> None:
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationServicer(index), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = external_auth_pb2_grpc.AuthorizationStub(channel).Check
            request = external_auth_pb2.CheckRequest()
            request.attributes.context_extensions.update({"project": "shop", "service_id": "svc-api"})
            request.attributes.request.http.headers["authorization"] = "Bearer member-token"
            allowed = await check(request)
            assert allowed.status.code == 0 and list(allowed.ok_response.headers_to_remove) == [
                "authorization"
            ]
            request.attributes.request.http.headers["authorization"] = "Bearer wrong"
            denied = await check(request)
            assert denied.denied_response.status.code == 401
            assert json.loads(denied.denied_response.body) == {
                "error": "unauthorized",
                "message": "the token is not valid",
            }
    finally:
        await server.stop(None)


class _Context:
    """What the servicer reads of a call: no client certificate (plain text)."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}


def _check(
    authorization: str, address: str = "10.0.0.1", rule: dict[str, str] | None = None
) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.context_extensions.update({"project": "shop", "service_id": "svc-api", **(rule or {})})
    request.attributes.source.address.socket_address.address = address
    if authorization:
        request.attributes.request.http.headers["authorization"] = authorization
    return request


async def _answer(servicer: AuthorizationServicer, request: external_auth_pb2.CheckRequest) -> int:
    """The HTTP status the check answers with; 200 when let through."""
    response = await servicer.Check(request, _Context())  # type: ignore[arg-type]
    return 200 if response.HasField("ok_response") else response.denied_response.status.code


async def test_the_principal_replaces_any_the_client_sent(index: CredentialIndex) -> None:
    servicer = AuthorizationServicer(index)
    for token, principal in (("member-token", "user:ann"), ("ghk_api", "key:k1")):
        response = await servicer.Check(_check(f"Bearer {token}"), _Context())  # type: ignore[arg-type]
        (header,) = response.ok_response.headers
        assert (header.header.key, header.header.value) == ("x-gatehouse-principal", principal)
        assert header.append_action == header.OVERWRITE_IF_EXISTS_OR_ADD


async def test_until_the_credentials_load_a_credential_waits_then_gets_503_never_401() -> None:
    index = CredentialIndex()
    servicer = AuthorizationServicer(index, loading_hold_seconds=0.05)
    assert await _answer(servicer, _check("")) == 401  # nothing to wait for
    response = await servicer.Check(_check("Bearer member-token"), _Context())  # type: ignore[arg-type]
    assert response.denied_response.status.code == 503
    headers = {h.header.key: h.header.value for h in response.denied_response.headers}
    assert headers["retry-after"] == "1" and "loading" in response.denied_response.body
    held = asyncio.create_task(
        _answer(AuthorizationServicer(index, loading_hold_seconds=10), _check("Bearer x"))
    )
    await asyncio.sleep(0)
    assert not held.done()
    index.replace([resources_pb2.Credential(id="t1", hash=_hash("x"), user="ann", projects=["shop"])])
    assert await held == 200


async def test_requests_that_fail_auth_are_limited_per_address_apart_from_principals(
    index: CredentialIndex,
) -> None:
    servicer = AuthorizationServicer(index)
    rule = {"rule": "svc-api|/", "rps": repr(1 / 60), "burst": "1"}
    flood = [await _answer(servicer, _check("Bearer stolen", rule=rule)) for _ in range(4)]
    assert flood == [401, 401, 429, 429]
    assert [await _answer(servicer, _check("", "10.0.0.2", rule)) for _ in range(3)] == [401, 401, 429]
    # A valid credential from the flooded address is let through: its limits come after the check.
    assert await _answer(servicer, _check("Bearer member-token", rule=rule)) == 200
    # Without a rule (a prefix without a limit), failures are never limited.
    assert {await _answer(servicer, _check("Bearer stolen")) for _ in range(5)} == {401}

"""The gateway-side auth check: tokens of project members, API keys of one service, admins."""

from __future__ import annotations

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

"""The control plane's ext_authz service answers wake checks only: a credential check (an Envoy still
configured by an older control plane during a rolling upgrade) is refused, never let through."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2

from gateway_xds.authz.context import PROJECT, WAKE_SERVICE_ID
from gateway_xds.authz.server import wake_service


@pytest.fixture
async def checks() -> AsyncIterator[external_auth_pb2_grpc.AuthorizationStub]:
    server = grpc.aio.server()
    wake_service().register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel)
    await server.stop(None)


def check(context: dict[str, str], authorization: str = "") -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.context_extensions.update(context)
    if authorization:
        request.attributes.request.http.headers["authorization"] = authorization
    return request


async def test_wake_checks_pass_and_credential_checks_never_do(
    checks: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    woken = await checks.Check(check({PROJECT: "main", WAKE_SERVICE_ID: "svc-1"}))
    assert woken.status.code == code_pb2.OK
    for old_style in ({PROJECT: "main", "service_id": "svc-1"}, {}):
        refused = await checks.Check(check(old_style, "Bearer gh_anything"))
        assert refused.status.code == code_pb2.UNAVAILABLE
        assert refused.denied_response.status.code == http_status_pb2.ServiceUnavailable

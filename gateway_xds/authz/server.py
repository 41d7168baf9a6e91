"""Envoy's ext_authz checks: auth, answered from memory (no registry round trip per request; the
Gatehouse credential is removed before the request reaches the service's replicas), and the wake
check of services scaled to zero, answered once a replica can take the request."""

from __future__ import annotations

import json

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from gateway_xds.authz.credentials import PROJECT, SERVICE_ID, WAKE_SERVICE_ID, CredentialIndex
from gateway_xds.autoscale.wake import Waker
from gateway_xds.server.peer import peer_gateway
from gateway_xds.server.server import ExtraService


def _denied(reason: str) -> external_auth_pb2.CheckResponse:
    body = json.dumps({"error": "unauthorized", "message": reason})
    headers = [
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="content-type", value="application/json")),
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="www-authenticate", value='Bearer realm="gatehouse"')
        ),
    ]
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized), headers=headers, body=body
        ),
    )


def _allowed() -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(headers_to_remove=["authorization"]),
    )


def _passed() -> external_auth_pb2.CheckResponse:
    """The request goes on unchanged (whether or not a replica came up: without one, Envoy's 503)."""
    return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, index: CredentialIndex, waker: Waker | None = None) -> None:
        self._index = index
        self._waker = waker

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        extensions = request.attributes.context_extensions
        if WAKE_SERVICE_ID in extensions:
            if self._waker is not None:
                await self._waker.hold(extensions[WAKE_SERVICE_ID], peer_gateway(context))
            return _passed()
        http = request.attributes.request.http
        decision = self._index.decide(
            http.headers.get("authorization", ""), extensions.get(PROJECT, ""), extensions.get(SERVICE_ID, "")
        )
        return _allowed() if decision.allowed else _denied(decision.reason)


AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name


def authorization_service(index: CredentialIndex, waker: Waker | None = None) -> ExtraService:
    """The checks, for the xDS server (Envoys reach it on the cluster they fetch xDS from)."""
    servicer = AuthorizationServicer(index, waker)
    return ExtraService(
        AUTHORIZATION_SERVICE,
        lambda server: external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server),
    )

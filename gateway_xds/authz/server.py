"""Envoy's ext_authz checks: auth, answered from memory (no registry round trip per request; the
Gatehouse credential is removed before the request reaches the service's replicas and replaced by
the principal), and the wake check of services scaled to zero, answered once a replica can take the
request.

A credential is never refused because the index is not loaded yet (the control plane has just
started): the check waits for it, briefly, then answers 503 with Retry-After. Requests that fail the
check are limited apart from every principal's allowance (ratelimit/unauthenticated.py)."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from gateway_xds.authz import responses
from gateway_xds.authz.credentials import PROJECT, SERVICE_ID, WAKE_SERVICE_ID, CredentialIndex, Decision
from gateway_xds.autoscale.wake import Waker
from gateway_xds.observe.responses import AnsweredRequests
from gateway_xds.ratelimit.unauthenticated import UnauthenticatedLimits
from gateway_xds.server.peer import peer_gateway
from gateway_xds.server.server import ExtraService
from gateway_xds.translate.authz import CHECK_TIMEOUT_MS

# Well within Envoy's timeout for the check, so that the answer is ours (503, saying why), not Envoy's.
LOADING_HOLD_SECONDS = CHECK_TIMEOUT_MS / 1000 / 2


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(
        self,
        index: CredentialIndex,
        waker: Waker | None = None,
        unauthenticated: UnauthenticatedLimits | None = None,
        loading_hold_seconds: float = LOADING_HOLD_SECONDS,
        answered: AnsweredRequests | None = None,
    ) -> None:
        self._index = index
        self._answered = answered if answered is not None else AnsweredRequests()
        self._waker = waker
        self._unauthenticated = unauthenticated if unauthenticated is not None else UnauthenticatedLimits()
        self._loading_hold_seconds = loading_hold_seconds

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        extensions = request.attributes.context_extensions
        if WAKE_SERVICE_ID in extensions:
            if self._waker is not None:
                await self._waker.hold(extensions[WAKE_SERVICE_ID], peer_gateway(context))
            return responses.passed()
        decision = await self._decide(
            request.attributes.request.http.headers.get("authorization", ""), extensions
        )
        if decision.allowed:
            return responses.allowed(decision.principal)
        if decision.loading:
            return responses.loading()
        address = request.attributes.source.address.socket_address.address
        wait = self._unauthenticated.wait(peer_gateway(context) or "", extensions, address)
        service_id = extensions.get(SERVICE_ID, "")
        if wait:
            self._answered.limited_unauthenticated(service_id)
            return responses.too_many_unauthenticated(wait)
        self._answered.refused(service_id)
        return responses.unauthorized(decision.reason)

    async def _decide(self, authorization: str, extensions: Mapping[str, str]) -> Decision:
        project, service_id = extensions.get(PROJECT, ""), extensions.get(SERVICE_ID, "")
        decision = self._index.decide(authorization, project, service_id)
        if decision.loading and await self._index.wait_loaded(self._loading_hold_seconds):
            decision = self._index.decide(authorization, project, service_id)
        return decision


AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name


def authorization_service(
    index: CredentialIndex, waker: Waker | None = None, answered: AnsweredRequests | None = None
) -> ExtraService:
    """The checks, for the xDS server (Envoys reach it on the cluster they fetch xDS from)."""
    servicer = AuthorizationServicer(index, waker, answered=answered)
    return ExtraService(
        AUTHORIZATION_SERVICE,
        lambda server: external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server),
    )

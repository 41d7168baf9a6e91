"""Envoy's ext_authz check that the control plane still answers: the wake check of services scaled to
zero, answered once a replica can take the request. (Credentials are checked by Envoy itself, with
no control plane to ask: translate/host_auth.py.)

Any other check is refused with 503: during a rolling upgrade an Envoy still configured by an older
control plane may ask here for a credential check, which must never pass for want of one."""

from __future__ import annotations

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from gateway_xds.authz.context import WAKE_SERVICE_ID
from gateway_xds.autoscale.wake import Waker
from gateway_xds.server.peer import peer_gateway
from gateway_xds.server.server import ExtraService


class WakeServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]  # xds-protos is untyped
    def __init__(self, waker: Waker | None = None) -> None:
        self._waker = waker

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse],
    ) -> external_auth_pb2.CheckResponse:
        """The request goes on unchanged (whether or not a replica came up: without one, Envoy's 503)."""
        service_id = request.attributes.context_extensions.get(WAKE_SERVICE_ID)
        if not service_id:
            return not_a_wake_check()
        if self._waker is not None:
            await self._waker.hold(service_id, peer_gateway(context))
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


def not_a_wake_check() -> external_auth_pb2.CheckResponse:
    retry = base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="retry-after", value="1"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAVAILABLE),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.ServiceUnavailable),
            headers=[retry],
            body="the gateway is taking a new configuration; retry shortly\n",
        ),
    )


AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name


def wake_service(waker: Waker | None = None) -> ExtraService:
    """The wake check, for the xDS server (Envoys reach it on the cluster they fetch xDS from)."""
    servicer = WakeServicer(waker)
    return ExtraService(
        AUTHORIZATION_SERVICE,
        lambda server: external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server),
    )

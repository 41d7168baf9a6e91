"""API keys of a service."""

from __future__ import annotations

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal
from services.registry import credentials, services
from services.registry.api.context import RegistryContext
from services.registry.convert import timestamp


class ServiceKeysServicer(registry_pb2_grpc.ServiceKeysServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def Create(
        self,
        request: registry_pb2.CreateServiceKeyRequest,
        context: grpc.aio.ServicerContext[registry_pb2.CreateServiceKeyRequest, registry_pb2.ServiceKey],
    ) -> registry_pb2.ServiceKey:
        current_principal().require_project_admin(request.project, "making API keys")
        async with self._ctx.write() as session:
            service = await services.get(session, request.project, request.service)
            key, value = await credentials.create_key(session, service, request.name)
            return registry_pb2.ServiceKey(
                service=service.name, name=key.name, key=value, created_at=timestamp(key.created_at)
            )

    async def List(
        self,
        request: registry_pb2.ListServiceKeysRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ListServiceKeysRequest, registry_pb2.ListServiceKeysResponse
        ],
    ) -> registry_pb2.ListServiceKeysResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            service = await services.get(session, request.project, request.service)
            keys = await credentials.keys_of(session, service)
            return registry_pb2.ListServiceKeysResponse(
                keys=[
                    registry_pb2.ServiceKey(
                        service=service.name, name=key.name, created_at=timestamp(key.created_at)
                    )
                    for key in keys
                ]
            )

    async def Delete(
        self,
        request: registry_pb2.DeleteServiceKeyRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.DeleteServiceKeyRequest, registry_pb2.DeleteServiceKeyResponse
        ],
    ) -> registry_pb2.DeleteServiceKeyResponse:
        current_principal().require_project_admin(request.project, "revoking API keys")
        async with self._ctx.write() as session:
            service = await services.get(session, request.project, request.service)
            await credentials.delete_key(session, service, request.name)
        return registry_pb2.DeleteServiceKeyResponse()

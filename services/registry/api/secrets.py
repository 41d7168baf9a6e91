"""Secrets: add, list (names only), delete."""

from __future__ import annotations

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import NotFound
from services.registry import secrets
from services.registry.api.context import RegistryContext
from services.registry.configurations import check_environment
from services.registry.convert import service_config
from services.registry.models import ServiceRow


class SecretsServicer(registry_pb2_grpc.SecretsServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def Add(
        self,
        request: registry_pb2.AddSecretRequest,
        context: grpc.aio.ServicerContext[registry_pb2.AddSecretRequest, registry_pb2.SecretInfo],
    ) -> registry_pb2.SecretInfo:
        current_principal().require_project_admin(request.project, "managing secrets")
        async with self._ctx.write() as session:
            await secrets.put(session, self._ctx.cipher, request.project, request.name, request.value)
        return registry_pb2.SecretInfo(project=request.project, name=request.name)

    async def List(
        self,
        request: registry_pb2.ListSecretsRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ListSecretsRequest, registry_pb2.ListSecretsResponse],
    ) -> registry_pb2.ListSecretsResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            names = await secrets.names(session, request.project)
        return registry_pb2.ListSecretsResponse(
            secrets=[registry_pb2.SecretInfo(project=request.project, name=name) for name in names]
        )

    async def ResolveRun(
        self,
        request: registry_pb2.ResolveRunRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ResolveRunRequest, registry_pb2.ResolvedRun],
    ) -> registry_pb2.ResolvedRun:
        current_principal().require_system()
        async with self._ctx.read() as session:
            row = await session.get(ServiceRow, request.service_id)
            if row is None:
                raise NotFound(f'service id "{request.service_id}" not found')
            config = service_config(row)
            resolved = await secrets.interpolate(
                session,
                self._ctx.cipher,
                row.project_id,
                {"env": dict(config.env), "commands": config.commands},
            )
        # A secret may have grown since the service was applied.
        check_environment(resolved["env"])
        return registry_pb2.ResolvedRun(env=resolved["env"], commands=resolved["commands"])

    async def Delete(
        self,
        request: registry_pb2.DeleteSecretRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.DeleteSecretRequest, registry_pb2.DeleteSecretResponse
        ],
    ) -> registry_pb2.DeleteSecretResponse:
        current_principal().require_project_admin(request.project, "managing secrets")
        async with self._ctx.write() as session:
            await secrets.remove(session, request.project, request.name)
        return registry_pb2.DeleteSecretResponse()

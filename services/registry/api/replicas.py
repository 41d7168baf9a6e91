"""Replicas: register, heartbeat, unregister, list."""

from __future__ import annotations

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc, resources_pb2
from services.common.auth import current_principal
from services.common.errors import PermissionDenied
from services.registry import replicas, services
from services.registry.api.context import RegistryContext
from services.registry.convert import replica_message

# Runners whose replicas Gatehouse itself watches (the sweeper leaves them alone).
RESERVED_RUNNERS = ("local", "agent")


class ReplicasServicer(registry_pb2_grpc.ReplicasServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def Register(
        self, request: registry_pb2.RegisterReplicaRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Replica:
        principal = current_principal()
        principal.require_project(request.project)
        if request.runner in RESERVED_RUNNERS and not principal.system:
            raise PermissionDenied(
                f"runner {request.runner!r} is Gatehouse's own: name your runner otherwise"
            )
        async with self._ctx.write() as session:
            service = await services.get(session, request.project, request.service)
            row = await replicas.register(
                session, service, request.id, request.address, request.ready, request.runner
            )
            return replica_message(row)

    async def Heartbeat(
        self, request: registry_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> resources_pb2.Replica:
        async with self._ctx.write() as session:
            row = await replicas.get(session, request.id)
            current_principal().require_project(row.project_id)
            await replicas.heartbeat(session, row, request.ready)
            return replica_message(row)

    async def Unregister(
        self, request: registry_pb2.UnregisterReplicaRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.UnregisterReplicaResponse:
        async with self._ctx.write() as session:
            row = await replicas.get(session, request.id)
            current_principal().require_project(row.project_id)
            await replicas.unregister(session, row)
        return registry_pb2.UnregisterReplicaResponse()

    async def List(
        self, request: registry_pb2.ListReplicasRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListReplicasResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            service = await services.get(session, request.project, request.service)
            rows = await replicas.list_rows(session, service.id)
        return registry_pb2.ListReplicasResponse(replicas=[replica_message(row) for row in rows])

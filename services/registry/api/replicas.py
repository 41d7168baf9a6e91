"""Replicas: register, heartbeat, unregister, list (who may, and where: replica_admission.py)."""

from __future__ import annotations

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc, resources_pb2
from services.common.auth import current_principal
from services.common.errors import InvalidArgument
from services.registry import replicas, services
from services.registry.api.context import RegistryContext
from services.registry.convert import replica_message
from services.registry.models import ServiceRow
from services.registry.replica_addresses import Claim


class ReplicasServicer(registry_pb2_grpc.ReplicasServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx
        self._admission = ctx.admission

    async def Register(
        self,
        request: registry_pb2.RegisterReplicaRequest,
        context: grpc.aio.ServicerContext[registry_pb2.RegisterReplicaRequest, resources_pb2.Replica],
    ) -> resources_pb2.Replica:
        principal = current_principal()
        self._admission.require_registrar(principal, request.project, request.runner)
        found = await self._admission.claim(principal, request.address)
        async with self._ctx.write() as session:
            service = await services.get(session, request.project, request.service)
            await self._admission.admit(session, service, request.id, request.runner, found)
            row = await replicas.register(
                session, service, request.id, request.address, request.ready, request.runner, request.version
            )
            return replica_message(row)

    async def _claim_of(self, replica_id: str) -> tuple[str, Claim | None]:
        """The replica's address as registered, claimed again by whoever keeps it alive."""
        principal = current_principal()
        async with self._ctx.read() as session:
            row = await replicas.get(session, replica_id)
            self._admission.require_keeper(principal, row)
            address = row.address
        return address, await self._admission.claim(principal, address)

    async def Heartbeat(
        self,
        request: registry_pb2.HeartbeatRequest,
        context: grpc.aio.ServicerContext[registry_pb2.HeartbeatRequest, resources_pb2.Replica],
    ) -> resources_pb2.Replica:
        """A heartbeat holds the address to the gateway's rules as they are now: a replica whose
        address they refuse (its gateway's replica_networks narrowed, say) leaves the service."""
        address, found = await self._claim_of(request.id)
        async with self._ctx.write() as session:
            row = await replicas.get(session, request.id)
            service = await session.get(ServiceRow, row.service_id)
            current = found if row.address == address else None
            refusal = await self._admission.refusal(session, service, current) if service else None
            if refusal is None:
                await replicas.heartbeat(session, row, request.ready)
                return replica_message(row)
            await replicas.unregister(session, row)
        raise InvalidArgument(f"{refusal} (replica {request.id} was unregistered)")

    async def SetProbed(
        self,
        request: registry_pb2.SetProbedRequest,
        context: grpc.aio.ServicerContext[registry_pb2.SetProbedRequest, resources_pb2.Replica],
    ) -> resources_pb2.Replica:
        current_principal().require_system()
        async with self._ctx.write() as session:
            row = await replicas.get(session, request.id)
            await replicas.set_probed(session, row, request.passing)
            return replica_message(row)

    async def Unregister(
        self,
        request: registry_pb2.UnregisterReplicaRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.UnregisterReplicaRequest, registry_pb2.UnregisterReplicaResponse
        ],
    ) -> registry_pb2.UnregisterReplicaResponse:
        async with self._ctx.write() as session:
            row = await replicas.get(session, request.id)
            self._admission.require_keeper(current_principal(), row)
            await replicas.unregister(session, row)
        return registry_pb2.UnregisterReplicaResponse()

    async def List(
        self,
        request: registry_pb2.ListReplicasRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ListReplicasRequest, registry_pb2.ListReplicasResponse
        ],
    ) -> registry_pb2.ListReplicasResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            service = await services.get(session, request.project, request.service)
            rows = await replicas.list_rows(session, service.id)
        return registry_pb2.ListReplicasResponse(replicas=[replica_message(row) for row in rows])

"""A project's cloud credentials: validated when added, stored encrypted, never listed back."""

from __future__ import annotations

import json

import grpc
from google.protobuf import json_format, struct_pb2
from pydantic import ValidationError
from sqlalchemy import select

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal
from services.common.backend_configs import BACKEND_CONFIG, CLOUD_BACKENDS, one_line
from services.common.errors import InvalidArgument, NotFound
from services.common.project_backends import Refused, check_project_backend
from services.registry.api.context import RegistryContext
from services.registry.convert import timestamp
from services.registry.models import BackendConfigRow, utcnow


def _info(row: BackendConfigRow) -> registry_pb2.BackendInfo:
    return registry_pb2.BackendInfo(
        project=row.project_id, type=row.type, updated_at=timestamp(row.updated_at)
    )


class BackendsServicer(registry_pb2_grpc.BackendsServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def Put(
        self,
        request: registry_pb2.PutBackendRequest,
        context: grpc.aio.ServicerContext[registry_pb2.PutBackendRequest, registry_pb2.BackendInfo],
    ) -> registry_pb2.BackendInfo:
        current_principal().require_project_admin(request.project, "configuring backends")
        raw = json_format.MessageToDict(request.config)
        kind = raw.get("type")
        if kind not in CLOUD_BACKENDS:
            raise InvalidArgument(f"backend `type` must be one of {', '.join(CLOUD_BACKENDS)}, not {kind!r}")
        try:
            config = BACKEND_CONFIG.validate_python(raw)
        except ValidationError as error:
            raise InvalidArgument(one_line(error, f"{kind} backend", raw)) from None
        try:
            await check_project_backend(config, raw, self._ctx.backend_networks)
        except Refused as refused:
            raise InvalidArgument(str(refused)) from None
        async with self._ctx.write() as session:
            row = await session.get(BackendConfigRow, (request.project, kind))
            if row is None:
                row = BackendConfigRow(project_id=request.project, type=kind)
                session.add(row)
            row.config_encrypted = self._ctx.cipher.encrypt(json.dumps(raw))
            row.updated_at = utcnow()
            await session.flush()
            return _info(row)

    async def List(
        self,
        request: registry_pb2.ListBackendsRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ListBackendsRequest, registry_pb2.ListBackendsResponse
        ],
    ) -> registry_pb2.ListBackendsResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            rows = await session.execute(
                select(BackendConfigRow)
                .where(BackendConfigRow.project_id == request.project)
                .order_by(BackendConfigRow.type)
            )
            return registry_pb2.ListBackendsResponse(backends=[_info(row) for row in rows.scalars()])

    async def Delete(
        self,
        request: registry_pb2.DeleteBackendRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.DeleteBackendRequest, registry_pb2.DeleteBackendResponse
        ],
    ) -> registry_pb2.DeleteBackendResponse:
        current_principal().require_project_admin(request.project, "configuring backends")
        async with self._ctx.write() as session:
            row = await session.get(BackendConfigRow, (request.project, request.type))
            if row is None:
                raise NotFound(f'project "{request.project}" has no {request.type} backend')
            await session.delete(row)
        return registry_pb2.DeleteBackendResponse()

    async def Resolve(
        self,
        request: registry_pb2.ResolveBackendRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ResolveBackendRequest, registry_pb2.ResolvedBackend],
    ) -> registry_pb2.ResolvedBackend:
        current_principal().require_system()
        async with self._ctx.read() as session:
            row = await session.get(BackendConfigRow, (request.project, request.type))
            if row is None:
                raise NotFound(f'project "{request.project}" has no {request.type} backend')
            config = struct_pb2.Struct()
            config.update(json.loads(self._ctx.cipher.decrypt(row.config_encrypted)))
            return registry_pb2.ResolvedBackend(config=config)

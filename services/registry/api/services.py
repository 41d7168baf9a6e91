"""Services: list, get, delete, and status from the runner."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from sqlalchemy import select

from gatehouse import gateway_resources
from gatehouse.v1 import registry_pb2, registry_pb2_grpc, resources_pb2
from services.common.auth import current_principal
from services.common.errors import InvalidArgument, NotFound
from services.registry import refusals, service_stats, services
from services.registry.access_logs import line
from services.registry.api.context import RegistryContext
from services.registry.api.follow import follow
from services.registry.models import ServiceRow


class ServicesServicer(registry_pb2_grpc.ServicesServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def List(
        self,
        request: registry_pb2.ListServicesRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ListServicesRequest, registry_pb2.ListServicesResponse
        ],
    ) -> registry_pb2.ListServicesResponse:
        current_principal().require_project(request.project)

        async def load() -> registry_pb2.ListServicesResponse:
            async with self._ctx.read() as session:
                rows = await services.list_rows(session, request.project)
                found = await refusals.show_on_services(session, await services.messages(session, rows))
                return registry_pb2.ListServicesResponse(services=found)

        return await self._ctx.reads.get(("services", request.project), load)

    async def Get(
        self,
        request: registry_pb2.GetRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetRequest, resources_pb2.Service],
    ) -> resources_pb2.Service:
        current_principal().require_project(request.project)
        return await self._read(request.project, request.name)

    async def Follow(
        self,
        request: registry_pb2.GetRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetRequest, resources_pb2.Service],
    ) -> AsyncIterator[resources_pb2.Service]:
        current_principal().require_project(request.project)
        async for service in follow(self._ctx.broadcaster, lambda: self._read(request.project, request.name)):
            yield service

    async def _read(self, project: str, name: str) -> resources_pb2.Service:
        async def load() -> resources_pb2.Service:
            async with self._ctx.read() as session:
                found = await services.message(session, await services.get(session, project, name))
                return (await refusals.show_on_services(session, [found]))[0]

        return await self._ctx.reads.get(("service", project, name), load)

    async def Delete(
        self,
        request: registry_pb2.DeleteRequest,
        context: grpc.aio.ServicerContext[registry_pb2.DeleteRequest, resources_pb2.Service],
    ) -> resources_pb2.Service:
        current_principal().require_project(request.project)
        async with self._ctx.write() as session:
            return await services.remove(session, await services.get(session, request.project, request.name))

    async def Promote(
        self,
        request: registry_pb2.RolloutDecisionRequest,
        context: grpc.aio.ServicerContext[registry_pb2.RolloutDecisionRequest, resources_pb2.Service],
    ) -> resources_pb2.Service:
        return await self._decide(request, promote=True)

    async def Abort(
        self,
        request: registry_pb2.RolloutDecisionRequest,
        context: grpc.aio.ServicerContext[registry_pb2.RolloutDecisionRequest, resources_pb2.Service],
    ) -> resources_pb2.Service:
        return await self._decide(request, promote=False)

    async def _decide(
        self, request: registry_pb2.RolloutDecisionRequest, promote: bool
    ) -> resources_pb2.Service:
        current_principal().require_project(request.project)
        async with self._ctx.write() as session:
            row = await services.get(session, request.project, request.name)
            await services.decide_rollout(session, row, promote)
            return await services.message(session, row)

    async def Scale(
        self,
        request: registry_pb2.ScaleServiceRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ScaleServiceRequest, resources_pb2.Service],
    ) -> resources_pb2.Service:
        current_principal().require_system()
        async with self._ctx.write() as session:
            row = await session.get(ServiceRow, request.id)
            if row is None:
                raise NotFound(f'service id "{request.id}" not found')
            await services.scale(session, row, request.replicas)
            return await services.message(session, row)

    async def UpdateStatus(
        self,
        request: registry_pb2.UpdateServiceStatusRequest,
        context: grpc.aio.ServicerContext[registry_pb2.UpdateServiceStatusRequest, resources_pb2.Service],
    ) -> resources_pb2.Service:
        current_principal().require_system()
        async with self._ctx.write() as session:
            row = await session.get(ServiceRow, request.id)
            if row is None:
                raise NotFound(f'service id "{request.id}" not found')
            await services.set_status(session, row, request.status)
            return await services.message(session, row)

    async def AccessLog(
        self,
        request: registry_pb2.AccessLogRequest,
        context: grpc.aio.ServicerContext[registry_pb2.AccessLogRequest, registry_pb2.AccessLogResponse],
    ) -> registry_pb2.AccessLogResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            row = await services.get(session, request.project, request.service)
        entries, cursor = self._ctx.access_logs.read(row.id, request.tail, request.after)
        return registry_pb2.AccessLogResponse(
            lines=[line(entry) for entry in entries], cursor=cursor, entries=entries
        )

    async def ReportAccessLogs(
        self,
        request: registry_pb2.ReportAccessLogsRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ReportAccessLogsRequest, registry_pb2.ReportAccessLogsResponse
        ],
    ) -> registry_pb2.ReportAccessLogsResponse:
        current_principal().require_system()
        by_backend: dict[str, list[registry_pb2.AccessLogEntry]] = {}
        for entry in request.entries:
            by_backend.setdefault(entry.backend, []).append(entry)
        async with self._ctx.read() as session:
            for backend, entries in by_backend.items():
                named = gateway_resources.service_of_backend(backend)
                if named is None:
                    continue
                row = await session.scalar(
                    select(ServiceRow).where(
                        ServiceRow.project_id == named[0],
                        ServiceRow.name == named[1],
                        ServiceRow.gateway_id == request.gateway_id,
                    )
                )
                # Only a service of the reporting gateway: one gateway's Envoys never log for another's.
                if row is not None:
                    self._ctx.access_logs.add(row.id, entries)
        return registry_pb2.ReportAccessLogsResponse()

    async def Stats(
        self,
        request: registry_pb2.ServiceStatsRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ServiceStatsRequest, registry_pb2.ServiceStatsResponse
        ],
    ) -> registry_pb2.ServiceStatsResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            row = await services.get(session, request.project, request.service)
        if not 0 <= request.minutes <= service_stats.MAX_MINUTES:
            raise InvalidArgument(f"--minutes must be 1 to {service_stats.MAX_MINUTES}")
        minutes = request.minutes or service_stats.DEFAULT_MINUTES
        points = self._ctx.service_stats.points(row.id, minutes)
        return registry_pb2.ServiceStatsResponse(points=points, lines=service_stats.render(points, minutes))

    async def ReportStats(
        self,
        request: registry_pb2.ReportServiceStatsRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ReportServiceStatsRequest, registry_pb2.ReportServiceStatsResponse
        ],
    ) -> registry_pb2.ReportServiceStatsResponse:
        current_principal().require_system()
        async with self._ctx.read() as session:
            ours = set(
                (
                    await session.scalars(
                        select(ServiceRow.id).where(ServiceRow.gateway_id == request.gateway_id)
                    )
                ).all()
            )
        for sample in request.services:
            # Only a service of the reporting gateway: one gateway's Envoys never count for another's.
            if sample.service_id in ours:
                self._ctx.service_stats.add(sample)
        return registry_pb2.ReportServiceStatsResponse()

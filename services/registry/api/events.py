"""A project's recent events, for its members only."""

from __future__ import annotations

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal
from services.registry import events
from services.registry.api.context import RegistryContext


class EventsServicer(registry_pb2_grpc.EventsServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def List(
        self,
        request: registry_pb2.ListEventsRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ListEventsRequest, registry_pb2.ListEventsResponse],
    ) -> registry_pb2.ListEventsResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            found = await events.listed(
                session, request.project, request.gateway, request.service, request.limit
            )
        return registry_pb2.ListEventsResponse(events=found)

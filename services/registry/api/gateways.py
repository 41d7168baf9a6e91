"""Gateways: list, get, delete; status and Envoy reports from Gatehouse's own services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from sqlalchemy import select

from gatehouse.client.defaults import ACCEPTED_METADATA
from gatehouse.v1 import registry_pb2, registry_pb2_grpc, resources_pb2
from services.common.auth import current_principal
from services.common.errors import AlreadyExists, NotFound
from services.registry import events, feed, gateways, refusals
from services.registry.api.configurations import _require_admin, delete_gateway
from services.registry.api.context import RegistryContext
from services.registry.api.follow import follow
from services.registry.configurations import GatewayConfig, parse_configuration
from services.registry.convert import gateway_message
from services.registry.models import EnvoyStatusRow, GatewayRow, utcnow

CREATE_WAIT_SECONDS = 600.0
SETTLED = (resources_pb2.GATEWAY_STATE_RUNNING, resources_pb2.GATEWAY_STATE_FAILED)


class GatewaysServicer(registry_pb2_grpc.GatewaysServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def List(
        self,
        request: registry_pb2.ListGatewaysRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ListGatewaysRequest, registry_pb2.ListGatewaysResponse
        ],
    ) -> registry_pb2.ListGatewaysResponse:
        current_principal().require_project(request.project)

        async def load() -> registry_pb2.ListGatewaysResponse:
            async with self._ctx.read() as session:
                rows = await gateways.list_rows(session, request.project)
                envoys = await gateways.envoys_of(session, [row.id for row in rows])
            return refusals.show_on_gateways(
                registry_pb2.ListGatewaysResponse(
                    gateways=[gateway_message(row, envoys.get(row.id)) for row in rows]
                )
            )

        return await self._ctx.reads.get(("gateways", request.project), load)

    async def Get(
        self,
        request: registry_pb2.GetRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetRequest, resources_pb2.Gateway],
    ) -> resources_pb2.Gateway:
        current_principal().require_project(request.project)
        return await self._read(request.project, request.name)

    async def Follow(
        self,
        request: registry_pb2.GetRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetRequest, resources_pb2.Gateway],
    ) -> AsyncIterator[resources_pb2.Gateway]:
        current_principal().require_project(request.project)
        async for gateway in follow(self._ctx.broadcaster, lambda: self._read(request.project, request.name)):
            yield gateway

    async def _read(self, project: str, name: str) -> resources_pb2.Gateway:
        async def load() -> resources_pb2.Gateway:
            async with self._ctx.read() as session:
                row = await gateways.get(session, project, name)
                return refusals.show_on_gateway(await gateways.message(session, row))

        return await self._ctx.reads.get(("gateway", project, name), load)

    async def Create(
        self,
        request: registry_pb2.CreateGatewayRequest,
        context: grpc.aio.ServicerContext[registry_pb2.CreateGatewayRequest, resources_pb2.Gateway],
    ) -> resources_pb2.Gateway:
        """Creates a gateway, then answers once the provisioner says it runs or failed. The local
        backend (region `local`) is the default, as `gatehouse server` embeds it. Headers go out
        once the gateway is created, so a client can say "it may take some time" only then."""
        _require_admin(request.project)
        backend = request.backend or "local"
        region = request.region or ("local" if backend == "local" else None)
        data = {"type": "gateway", "name": request.name or None, "backend": backend}
        data |= {"region": region, "domain": request.domain or None}
        config = parse_configuration({key: value for key, value in data.items() if value is not None})
        assert isinstance(config, GatewayConfig)
        gateways.check_backend_rules(config)
        async with self._ctx.write() as session:
            if config.name and await gateways.find(session, request.project, config.name) is not None:
                raise AlreadyExists(f'gateway "{config.name}" already exists in project "{request.project}"')
            row = await gateways.apply(session, request.project, config, "", 0, False)
            gateway_id = row.id
        await context.send_initial_metadata((ACCEPTED_METADATA,))
        deadline = asyncio.get_running_loop().time() + (context.time_remaining() or CREATE_WAIT_SECONDS)
        while True:
            waiter = self._ctx.broadcaster.arm()
            async with self._ctx.read() as session:
                row = await self._by_id(session, gateway_id)
                gateway = await gateways.message(session, row)
            remaining = deadline - asyncio.get_running_loop().time()
            if gateway.status.state in SETTLED or remaining <= 0:
                return gateway
            await self._ctx.broadcaster.wait(waiter, min(remaining, 1.0))

    async def Update(
        self,
        request: registry_pb2.UpdateGatewayRequest,
        context: grpc.aio.ServicerContext[registry_pb2.UpdateGatewayRequest, resources_pb2.Gateway],
    ) -> resources_pb2.Gateway:
        _require_admin(request.project)
        async with self._ctx.write() as session:
            row = await gateways.get(session, request.project, request.name)
            if request.set_default:
                await gateways.make_default(session, row)
            return await gateways.message(session, row)

    async def Delete(
        self,
        request: registry_pb2.DeleteRequest,
        context: grpc.aio.ServicerContext[registry_pb2.DeleteRequest, resources_pb2.Gateway],
    ) -> resources_pb2.Gateway:
        _require_admin(request.project)
        async with self._ctx.write() as session:
            row = await gateways.get(session, request.project, request.name)
            await delete_gateway(session, row, request.force)
            return await gateways.message(session, row)

    async def _by_id(self, session: object, gateway_id: str) -> GatewayRow:
        row = await session.get(GatewayRow, gateway_id)  # type: ignore[attr-defined]
        if row is None:
            raise NotFound(f'gateway id "{gateway_id}" not found')
        return row  # type: ignore[no-any-return]

    async def UpdateStatus(
        self,
        request: registry_pb2.UpdateGatewayStatusRequest,
        context: grpc.aio.ServicerContext[registry_pb2.UpdateGatewayStatusRequest, resources_pb2.Gateway],
    ) -> resources_pb2.Gateway:
        current_principal().require_system()
        async with self._ctx.write() as session:
            row = await self._by_id(session, request.id)
            await gateways.set_status(session, row, request.status)
            return await gateways.message(session, row)

    async def FinalizeDelete(
        self,
        request: registry_pb2.FinalizeRequest,
        context: grpc.aio.ServicerContext[registry_pb2.FinalizeRequest, registry_pb2.FinalizeResponse],
    ) -> registry_pb2.FinalizeResponse:
        current_principal().require_system()
        async with self._ctx.write() as session:
            row = await session.get(GatewayRow, request.id)
            if row is not None:
                await gateways.finalize(session, row)
        return registry_pb2.FinalizeResponse()

    async def ReportEnvoys(
        self,
        request: registry_pb2.ReportEnvoysRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ReportEnvoysRequest, registry_pb2.ReportEnvoysResponse
        ],
    ) -> registry_pb2.ReportEnvoysResponse:
        current_principal().require_system()
        async with self._ctx.write() as session:
            gateway = await session.get(GatewayRow, request.gateway_id)
            if gateway is None:
                return registry_pb2.ReportEnvoysResponse()
            feed.touch(session, gateway.project_id)
            await gateways.touch_users(session, gateway.id)
            found = await session.execute(
                select(EnvoyStatusRow).where(EnvoyStatusRow.gateway_id == request.gateway_id)
            )
            rows = {row.node_id: row for row in found.scalars()}
            before = {node: row.rejected for node, row in rows.items()}
            events.of_report(session, gateway, before, request.envoys)
            # Rows are updated in place (the time of the report, and what changed), not replaced.
            now = utcnow()
            for envoy in request.envoys:
                row = rows.pop(envoy.node_id, None)
                if row is None:
                    row = EnvoyStatusRow(gateway_id=request.gateway_id, node_id=envoy.node_id)
                    session.add(row)
                row.connected, row.acked_revision, row.rejected = (
                    envoy.connected,
                    envoy.acked_revision,
                    envoy.rejected,
                )
                row.rejected_resources = refusals.stored(envoy)
                row.updated_at = now
            for gone in rows.values():
                await session.delete(gone)
        return registry_pb2.ReportEnvoysResponse()

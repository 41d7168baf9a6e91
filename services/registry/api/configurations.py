"""apply / delete of YAML configurations."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import FailedPrecondition, NotFound
from services.registry import gateways, secrets, services
from services.registry.api.context import RegistryContext
from services.registry.configurations import (
    GatewayConfig,
    ServiceConfig,
    check_environment,
    parse_configuration,
)
from services.registry.convert import gateway_config, gateway_status, service_config

RUNTIME_FIELDS = ("env", "commands")


def _require_admin(project: str) -> None:
    current_principal().require_project_admin(project, "managing gateways")


class ConfigurationsServicer(registry_pb2_grpc.ConfigurationsServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def _parse(self, session: Any, project: str, struct: Any) -> GatewayConfig | ServiceConfig:
        current_principal().require_project(project)
        data = json_format.MessageToDict(struct)
        # A service's env and commands keep their ${{ secrets.X }} as written: the values are resolved
        # only where replicas start, so they are never stored in the spec or shown by `service get`.
        kept = (
            {key: data.pop(key) for key in RUNTIME_FIELDS if key in data}
            if data.get("type") == "service"
            else {}
        )
        data = await secrets.interpolate(session, self._ctx.cipher, project, data)
        await secrets.check_known(session, project, kept)
        data.update(kept)
        config = parse_configuration(_integral(data))
        if isinstance(config, GatewayConfig):
            _require_admin(project)
        elif secrets.references(dict(config.env)):
            resolved = await secrets.interpolate(session, self._ctx.cipher, project, dict(config.env))
            check_environment(resolved)
        return config

    async def GetPlan(
        self,
        request: registry_pb2.ApplyRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ApplyRequest, registry_pb2.Plan],
    ) -> registry_pb2.Plan:
        async with self._ctx.read() as session:
            config = await self._parse(session, request.project, request.configuration)
            if isinstance(config, GatewayConfig):
                gateways.check_backend_rules(config)
                row = await gateways.resolve_target(session, request.project, config, request.source)
                if row is None:
                    return registry_pb2.Plan(type="gateway", name=config.name or "", action="create")
                changes, in_place = gateways.diff(gateway_config(row), config, row.is_default)
                plan = registry_pb2.Plan(type="gateway", name=row.name, changes=changes)
                plan.current_version = row.resource_version
                plan.gateway.CopyFrom(await gateways.message(session, row))
                if gateway_status(row).state == gateways.FAILED:
                    plan.action = "recreate"
                else:
                    plan.action = "none" if not changes else "update" if in_place else "recreate"
                return plan
            service_row = await services.resolve_target(session, request.project, config, request.source)
            # What Apply would refuse (an unknown gateway, a port taken) is refused by the plan.
            if not request.deleting:
                principal, reserved = current_principal(), self._ctx.reserved_ports
                await services.admit(session, principal, request.project, config, service_row, reserved)
            if service_row is None:
                return registry_pb2.Plan(type="service", name=config.name or "", action="create")
            changes = services.diff(service_config(service_row), config)
            plan = registry_pb2.Plan(type="service", name=service_row.name, changes=changes)
            plan.action = "update" if changes else "none"
            plan.current_version = service_row.resource_version
            plan.service.CopyFrom(await services.message(session, service_row))
            return plan

    async def Apply(
        self,
        request: registry_pb2.ApplyRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ApplyRequest, registry_pb2.ApplyResponse],
    ) -> registry_pb2.ApplyResponse:
        async with self._ctx.write() as session:
            config = await self._parse(session, request.project, request.configuration)
            if isinstance(config, GatewayConfig):
                row = await gateways.apply(
                    session, request.project, config, request.source, request.expected_version, request.force
                )
                await services.replace_on_gateway(session, row)
                return registry_pb2.ApplyResponse(gateway=await gateways.message(session, row))
            service = await services.apply(
                session,
                current_principal(),
                request.project,
                config,
                request.source,
                request.expected_version,
                request.force,
                self._ctx.reserved_ports,
            )
            return registry_pb2.ApplyResponse(service=service)

    async def Delete(
        self,
        request: registry_pb2.DeleteConfigurationRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.DeleteConfigurationRequest, registry_pb2.DeleteConfigurationResponse
        ],
    ) -> registry_pb2.DeleteConfigurationResponse:
        async with self._ctx.write() as session:
            config = await self._parse(session, request.project, request.configuration)
            if isinstance(config, GatewayConfig):
                row = await gateways.resolve_target(session, request.project, config, request.source)
                if row is None:
                    raise NotFound(
                        f'gateway "{config.name or request.source}" not found in project "{request.project}"'
                    )
                await delete_gateway(session, row, request.force)
                return registry_pb2.DeleteConfigurationResponse(gateway=await gateways.message(session, row))
            assert isinstance(config, ServiceConfig)
            service_row = await services.resolve_target(session, request.project, config, request.source)
            if service_row is None:
                raise NotFound(
                    f'service "{config.name or request.source}" not found in project "{request.project}"'
                )
            return registry_pb2.DeleteConfigurationResponse(
                service=await services.remove(session, service_row)
            )


async def delete_gateway(session: Any, row: Any, force: bool) -> None:
    using = await gateways.services_using(session, row.id)
    if using and not force:
        names = ", ".join(service.name for service in using)
        raise FailedPrecondition(
            f'gateway "{row.name}" is used by service(s) {names}: delete them first, or pass --force'
        )
    for service in using:
        await services.remove(session, service)
    await gateways.mark_deleting(session, row)


def _integral(value: Any) -> Any:
    """protobuf Struct makes every number a float; YAML's integers come back as integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value

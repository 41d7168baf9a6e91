"""Drives a registry over its API the way the CLI and the provisioner would: apply gateways and
services, report a gateway running, register replicas. For real-Envoy tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    configuration = struct_pb2.Struct()
    configuration.update(data)
    return configuration


@dataclass
class RegistryDriver:
    admin: Stubs  # a project member's token
    system: Stubs  # the system token (status writes)
    project: str = "main"

    async def apply(self, configuration: dict[str, Any]) -> registry_pb2.ApplyResponse:
        request = registry_pb2.ApplyRequest(project=self.project, configuration=_struct(configuration))
        return await self.admin.configurations.Apply(request, timeout=30)

    async def delete(self, configuration: dict[str, Any]) -> None:
        request = registry_pb2.DeleteConfigurationRequest(
            project=self.project, configuration=_struct(configuration), force=True
        )
        await self.admin.configurations.Delete(request, timeout=30)

    async def running_gateway(
        self, name: str, listen_address: str, http_port: int, domain: str | None = None
    ) -> resources_pb2.Gateway:
        """A gateway as the provisioner leaves it once its host is up: running, listening where said."""
        configuration: dict[str, Any] = {
            "type": "gateway",
            "name": name,
            "backend": "local",
            "region": "local",
            "certificate": None,
        }
        if domain:
            configuration["domain"] = domain
        gateway = (await self.apply(configuration)).gateway
        status = resources_pb2.GatewayStatus(
            state=resources_pb2.GATEWAY_STATE_RUNNING,
            hostname=listen_address,
            listen_address=listen_address,
            http_port=http_port,
        )
        request = registry_pb2.UpdateGatewayStatusRequest(id=gateway.id, status=status)
        return await self.system.gateways.UpdateStatus(request, timeout=30)

    async def service(self, name: str, gateway: str, port: int | str, **spec: Any) -> resources_pb2.Service:
        """A service without commands (its replicas are registered by hand), open to anyone over plain
        HTTP unless `spec` says otherwise (e.g. `auth=True`, `rate_limits=[...]`)."""
        configuration = {"type": "service", "name": name, "gateway": gateway, "port": port, "https": False}
        return (await self.apply({**configuration, "auth": False, **spec})).service

    async def delete_service(self, name: str, gateway: str, port: int | str) -> None:
        await self.delete({"type": "service", "name": name, "gateway": gateway, "port": port, "https": False})

    async def replica(self, service: str, replica_id: str, address: str, ready: bool = True) -> None:
        request = registry_pb2.RegisterReplicaRequest(
            project=self.project, service=service, id=replica_id, address=address, ready=ready, runner="test"
        )
        await self.admin.replicas.Register(request, timeout=30)

    async def unregister(self, replica_id: str) -> None:
        await self.admin.replicas.Unregister(registry_pb2.UnregisterReplicaRequest(id=replica_id), timeout=30)

    async def gateway(self, name: str) -> resources_pb2.Gateway:
        request = registry_pb2.GetRequest(project=self.project, name=name)
        return await self.admin.gateways.Get(request, timeout=30)

"""Driving a gateway backend the way the reconciler does: again and again until it settles."""

from __future__ import annotations

import asyncio
from typing import Any

from gatehouse.v1 import resources_pb2
from services.provisioner.backends.base import GatewayBackend, HostInfo, NotReady

PASSES = 30


def gateway(
    backend: str,
    region: str,
    gateway_id: str = "gw-0123456789ab",
    name: str = "example-gateway",
    certificate: resources_pb2.Certificate | None = None,
    **spec: Any,
) -> resources_pb2.Gateway:
    """A gateway as the registry hands it over (defaults as in the registry: public, one host)."""
    fields: dict[str, Any] = {"public_ip": True, "replicas": 1, **spec}
    message = resources_pb2.GatewaySpec(backend=backend, region=region, **fields)
    if certificate is not None:
        message.certificate.CopyFrom(certificate)
    return resources_pb2.Gateway(id=gateway_id, project="main", name=name, spec=message)


async def converge(backend: GatewayBackend, gw: resources_pb2.Gateway, pause: float = 0.0) -> HostInfo:
    waits = []
    for _ in range(PASSES):
        try:
            return await backend.create_or_update(gw)
        except NotReady as pending:
            waits.append(str(pending))
            await asyncio.sleep(pause)
    raise AssertionError(f"never settled: {waits[-3:]}")


async def delete_fully(backend: GatewayBackend, gw: resources_pb2.Gateway, pause: float = 0.0) -> None:
    waits = []
    for _ in range(PASSES):
        try:
            await backend.delete(gw)
            return
        except NotReady as pending:
            waits.append(str(pending))
            await asyncio.sleep(pause)
    raise AssertionError(f"never deleted: {waits[-3:]}")

"""What a gateway's Envoys report, shown where users read: what they refuse, on the gateway (its ERROR
column) and on each service whose own resources are refused (failed, with Envoy's reason); and
whether each service is live (its latest change applied by every connected Envoy).

Derived when a gateway or service is read, from what gateway_xds reports of each Envoy; never stored
in a status, so the watch feed and the controllers that write statuses do not see it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse import gateway_resources
from gatehouse.v1 import registry_pb2, resources_pb2
from services.registry import gateways, replicas
from services.registry.convert import envoy_status

FAILED = resources_pb2.SERVICE_STATE_FAILED


def stored(envoy: resources_pb2.EnvoyStatus) -> str:
    """The Envoy's refused resources as the registry keeps them."""
    return json.dumps(
        [{"type": r.type, "name": r.name, "reason": r.reason} for r in envoy.rejected_resources]
    )


def show_on_gateway(gateway: resources_pb2.Gateway) -> resources_pb2.Gateway:
    """The gateway's message, followed by what its connected Envoys reject."""
    rejected = [envoy.rejected for envoy in gateway.status.envoys if envoy.connected and envoy.rejected]
    shown = list(dict.fromkeys([gateway.status.message, *rejected]))
    gateway.status.message = "; ".join(part for part in shown if part)
    return gateway


def show_on_gateways(response: registry_pb2.ListGatewaysResponse) -> registry_pb2.ListGatewaysResponse:
    for gateway in response.gateways:
        show_on_gateway(gateway)
    return response


async def show_on_services(
    session: AsyncSession, services: Sequence[resources_pb2.Service]
) -> Sequence[resources_pb2.Service]:
    """Each service whose own resources an Envoy of its gateway refuses is failed, saying so first;
    each says whether it is live."""
    gateway_ids = sorted({service.spec.gateway_id for service in services if service.spec.gateway_id})
    rows = await gateways.envoys_of(session, gateway_ids)
    envoys = {gateway_id: [envoy_status(row) for row in found] for gateway_id, found in rows.items()}
    newest_replicas = await replicas.newest_revisions(session, [service.id for service in services])
    for service in services:
        _show(service, envoys.get(service.spec.gateway_id, ()))
        revision = max(service.resource_version, newest_replicas.get(service.id, 0))
        if service.spec.gateway_id:
            service.status.live.CopyFrom(
                gateway_resources.liveness(envoys.get(service.spec.gateway_id, ()), revision)
            )
        else:
            service.status.live.CopyFrom(resources_pb2.Liveness(live=True, revision=revision))
    return services


def _show(service: resources_pb2.Service, envoys: Iterable[resources_pb2.EnvoyStatus]) -> None:
    refused = gateway_resources.refused(service, envoys, service.resource_version)
    if not refused:
        return
    status = service.status
    own = status.message if status.state == FAILED else ""
    status.state = FAILED
    refusal = gateway_resources.refusal_message(status.gateway_name, refused)
    status.message = f"{refusal}; {own}" if own else refusal

"""Scale from zero without a 503: a request for a service with no replica is held at the gateway
(Envoy's wake check, see gateway_xds/translate/authz.py) while the autoscaler brings one up, and let
go once every connected Envoy of the gateway routes to it, or when the hold runs out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import resources_pb2
from gateway_xds.envoy_sync import EnvoySync
from gateway_xds.ir.policies import WAKE_HOLD_SECONDS
from gateway_xds.shared.acks import SharedAcks
from gateway_xds.shared.redis import SharedStateUnavailable

log = logging.getLogger(__name__)

# A holder asks the autoscaler again this often until the service is scaled (a request may be lost
# when the leading copy changes).
ASK_AGAIN_SECONDS = 1.0
# With other copies, how often a holder looks for the replica and at their Envoys: neither is
# reported to this copy (its own Envoys' reports wake it at once).
FLEET_LOOK_SECONDS = 0.05


class ScalesFromZero(Protocol):
    """What a holder asks of the autoscaler (the Autoscaler)."""

    def wake(self, service: resources_pb2.Service) -> None: ...


class Waker:
    def __init__(
        self,
        mirror: RegistryMirror,
        sync: EnvoySync,
        autoscaler: ScalesFromZero,
        hold_seconds: float = WAKE_HOLD_SECONDS,
        fleet: SharedAcks | None = None,
    ) -> None:
        """`fleet`: the Envoys of other copies too (an Envoy's check may come to any copy)."""
        self._mirror = mirror
        self._sync = sync
        self._autoscaler = autoscaler
        self._hold_seconds = hold_seconds
        self._fleet = fleet

    async def hold(self, service_id: str, caller_gateway: str | None = None) -> bool:
        """Wait until the service can take the request; False if the hold ran out first.

        `caller_gateway`: the gateway the asking Envoy's certificate names; services of other gateways
        are not woken for it."""
        service = self._mirror.services.get(service_id)
        if service is None or (caller_gateway is not None and service.spec.gateway_id != caller_gateway):
            return False
        gateway_id = service.spec.gateway_id
        self._autoscaler.wake(service)
        try:
            async with asyncio.timeout(self._hold_seconds):
                while True:
                    revision = self._first_ready_revision(service_id)
                    if revision is not None and await self._all_acked(gateway_id, revision):
                        return True
                    wait = ASK_AGAIN_SECONDS if self._fleet is None else FLEET_LOOK_SECONDS
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._sync.changed()
                    if revision is None and (current := self._mirror.services.get(service_id)):
                        self._autoscaler.wake(current)
        except TimeoutError:
            log.warning(
                "service %s/%s: no replica within %.0f s", service.project, service.name, self._hold_seconds
            )
            return False

    async def _all_acked(self, gateway_id: str, revision: int) -> bool:
        """Whether the gateway's Envoys have `revision`: this copy's, then every copy's (without
        Redis, or when it does not answer, this copy's view is all there is)."""
        if not self._sync.all_acked(gateway_id, revision):
            return False
        if self._fleet is None:
            return True
        try:
            return await self._fleet.all_acked(gateway_id, revision)
        except SharedStateUnavailable:
            return True

    def _first_ready_revision(self, service_id: str) -> int | None:
        """The revision at which the service's first ready replica became known, if it has one."""
        revisions = [r.resource_version for r in self._mirror.replicas_of(service_id) if r.ready]
        return min(revisions, default=None)

"""Scale from zero without a 503: a request for a service with no replica is held at the gateway
(Envoy's wake check, see gateway_xds/translate/authz.py) while the autoscaler brings one up, and let
go once every connected Envoy of the gateway routes to it, or when the hold runs out."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gatehouse.client.mirror import RegistryMirror
from gateway_xds.autoscale.autoscaler import Autoscaler
from gateway_xds.envoy_sync import EnvoySync
from gateway_xds.ir.policies import WAKE_HOLD_SECONDS

log = logging.getLogger(__name__)

# A holder asks the autoscaler again this often until the service is scaled (a request may be lost
# when the leading copy changes).
ASK_AGAIN_SECONDS = 1.0


class Waker:
    def __init__(
        self,
        mirror: RegistryMirror,
        sync: EnvoySync,
        autoscaler: Autoscaler,
        hold_seconds: float = WAKE_HOLD_SECONDS,
    ) -> None:
        self._mirror = mirror
        self._sync = sync
        self._autoscaler = autoscaler
        self._hold_seconds = hold_seconds

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
                    if revision is not None and self._sync.all_acked(gateway_id, revision):
                        return True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._sync.changed(), ASK_AGAIN_SECONDS)
                    if revision is None and (current := self._mirror.services.get(service_id)):
                        self._autoscaler.wake(current)
        except TimeoutError:
            log.warning(
                "service %s/%s: no replica within %.0f s", service.project, service.name, self._hold_seconds
            )
            return False

    def _first_ready_revision(self, service_id: str) -> int | None:
        """The revision at which the service's first ready replica became known, if it has one."""
        revisions = [r.resource_version for r in self._mirror.replicas_of(service_id) if r.ready]
        return min(revisions, default=None)

"""The translator and the cache: from a gateway's IR, or a change of it, to its published snapshot."""

from __future__ import annotations

import logging

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.incremental import IncrementalGateway, ResourceHook
from gateway_xds.ir.changes import GatewayChange
from gateway_xds.ir.gateway import GatewayIR

log = logging.getLogger(__name__)


class InvalidGatewayError(ValueError):
    def __init__(self, gateway_id: str, errors: list[str]) -> None:
        super().__init__(f"invalid gateway {gateway_id!r}: " + "; ".join(errors))
        self.gateway_id = gateway_id
        self.errors = errors


def snapshot_from_ir(ir: GatewayIR, revision: int) -> Snapshot:
    """Validate and translate; raises InvalidGatewayError (a ValueError) listing every problem."""
    errors = ir.validate()
    if errors:
        raise InvalidGatewayError(ir.gateway_id, errors)
    return IncrementalGateway.of(ir).commit(revision)


def publish(cache: SnapshotCache, ir: GatewayIR, revision: int) -> Snapshot:
    """Build the gateway's snapshot and make it current; the Envoys of the gateway get it pushed."""
    snapshot = snapshot_from_ir(ir, revision)
    cache.set_snapshot(ir.gateway_id, snapshot)
    return snapshot


class Publisher:
    """Translates each gateway's changes (one IncrementalGateway per gateway) and publishes the
    snapshots; what it refuses of a change it logs, publishing the rest."""

    def __init__(self, cache: SnapshotCache, hook: ResourceHook | None = None) -> None:
        self._cache = cache
        self._hook = hook
        self._gateways: dict[str, IncrementalGateway] = {}

    def has(self, gateway_id: str) -> bool:
        return gateway_id in self._gateways

    def gateway_ids(self) -> set[str]:
        """Every gateway translated or in the cache."""
        return set(self._gateways) | set(self._cache.gateway_ids())

    def service_keys(self, gateway_id: str) -> set[str]:
        gateway = self._gateways.get(gateway_id)
        return gateway.service_keys() if gateway is not None else set()

    def remove(self, gateway_id: str) -> None:
        self._gateways.pop(gateway_id, None)
        self._cache.clear(gateway_id)

    def apply(self, change: GatewayChange, revision: int) -> None:
        gateway = self._gateways.get(change.gateway_id)
        if gateway is None:
            gateway = self._gateways[change.gateway_id] = IncrementalGateway(change.gateway_id, self._hook)
        errors: list[str] = []
        for name, secret in change.secrets.items():
            if secret is None:
                gateway.remove_secret(name)
            else:
                errors += gateway.put_secret(secret)
        errors += gateway.set_listeners(change.listeners)
        errors += gateway.set_agent_tunnels(change.agent_tunnels)
        for key, route in change.services.items():
            if route is None:
                gateway.remove_service(key)
            else:
                gateway.put_service(key, route)
        for error in errors:
            log.error("gateway %s: %s", change.name, error)
        try:
            self._cache.set_snapshot(change.gateway_id, gateway.commit(revision))
        except ValueError as error:
            log.error("gateway %s: configuration not published: %s", change.name, error)

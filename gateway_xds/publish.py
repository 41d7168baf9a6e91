"""From a gateway's IR to a published snapshot."""

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.incremental import IncrementalGateway
from gateway_xds.ir.gateway import GatewayIR


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

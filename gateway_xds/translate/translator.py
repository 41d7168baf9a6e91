"""GatewayIR -> xDS resources, made as gateway_xds makes them for its Envoys: the gateway's pieces put
into an IncrementalGateway from nothing (the golden tests check this path)."""

from gateway_xds.incremental import IncrementalGateway
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.resources import PUSH_ORDER, Resources


def translate(ir: GatewayIR) -> Resources:
    """Translate a valid IR (see GatewayIR.validate); every known type URL is present in the result."""
    snapshot = IncrementalGateway.of(ir).commit(0)
    return {type_url: snapshot.resources_of(type_url) for type_url in PUSH_ORDER}

"""Backend endpoints as ClusterLoadAssignments (an empty one makes Envoy answer 503)."""

from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from gateway_xds.ir.backends import Backend
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.resources import ENDPOINT, Resources
from gateway_xds.translate.config_source import socket_address


def translate_endpoints(ir: GatewayIR) -> Resources:
    # A backend served by agents has no endpoints: its connections are their tunnels.
    return {ENDPOINT: {b.name: load_assignment(b) for b in ir.backends if not b.agent_name}}


def load_assignment(backend: Backend) -> endpoint_pb2.ClusterLoadAssignment:
    if not backend.endpoints:
        return endpoint_pb2.ClusterLoadAssignment(cluster_name=backend.name)
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=socket_address(e.host, e.port))
        )
        for e in backend.endpoints
    ]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=backend.name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)],
    )

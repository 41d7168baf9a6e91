"""Backend endpoints as ClusterLoadAssignments (an empty one makes Envoy answer 503)."""

from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from gateway_xds.ir.backends import Backend
from gateway_xds.translate.config_source import socket_address


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

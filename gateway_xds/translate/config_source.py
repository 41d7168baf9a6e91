"""Helpers shared by the feature translators."""

from envoy.config.core.v3 import address_pb2, config_source_pb2, grpc_service_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

# No SO_REUSEPORT: a second Envoy binding the same address and port fails (its listener is
# rejected) instead of silently taking half of another gateway's connections.
EXCLUSIVE_BIND = wrappers_pb2.BoolValue(value=False)


def ads_config_source() -> config_source_pb2.ConfigSource:
    """Fetch the referring resource over the same ADS stream, in API v3."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    # Deterministic bytes keep the snapshot's content versions stable.
    packed.Pack(message, deterministic=True)
    return packed


def milliseconds(value: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(value)
    return duration


def control_plane_service(cluster: str, timeout_ms: int | None = None) -> grpc_service_pb2.GrpcService:
    """A gRPC service Envoy calls on `cluster` (gateway_xds: checks, shared rate limits)."""
    service = grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)
    )
    if timeout_ms is not None:
        service.timeout.CopyFrom(milliseconds(timeout_ms))
    return service

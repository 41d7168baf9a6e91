"""An authenticated channel to the Gatehouse API and the stubs on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from gatehouse.leases import held_claim
from gatehouse.limits import GRPC_MESSAGE_BYTES
from gatehouse.v1 import certificates_pb2_grpc, provisioner_pb2_grpc, registry_pb2_grpc, tunnel_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES),
    # An address may name several copies of the registry (`ipv4:a:1,b:2`, or a name resolving to
    # several): when one goes, the channel is on another within a second, not gRPC's default 1-120 s.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def _with_token(details: grpc.aio.ClientCallDetails, header: tuple[str, str]) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add(*header)
    claim = held_claim.get()
    if claim is not None:
        metadata.add(*claim.header())
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# grpc.aio files an interceptor under the first kind it is, so each kind needs its own class.
class _UnaryBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(_with_token(details, self._header), request)


class _StreamBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(_with_token(details, self._header), request)


class _BidiBearer(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return await continuation(_with_token(details, self._header), requests)


def open_channel(address: str, token: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        address,
        options=CHANNEL_OPTIONS,
        interceptors=[_UnaryBearer(token), _StreamBearer(token), _BidiBearer(token)],
    )


@dataclass(frozen=True)
class Stubs:
    channel: grpc.aio.Channel
    configurations: registry_pb2_grpc.ConfigurationsAsyncStub
    gateways: registry_pb2_grpc.GatewaysAsyncStub
    services: registry_pb2_grpc.ServicesAsyncStub
    replicas: registry_pb2_grpc.ReplicasAsyncStub
    secrets: registry_pb2_grpc.SecretsAsyncStub
    watch: registry_pb2_grpc.WatchAsyncStub
    identity: registry_pb2_grpc.IdentityAsyncStub
    projects: registry_pb2_grpc.ProjectsAsyncStub
    users: registry_pb2_grpc.UsersAsyncStub
    tls_certificates: registry_pb2_grpc.TlsCertificatesAsyncStub
    service_keys: registry_pb2_grpc.ServiceKeysAsyncStub
    backends: registry_pb2_grpc.BackendsAsyncStub
    events: registry_pb2_grpc.EventsAsyncStub
    provisioner: provisioner_pb2_grpc.ProvisionerAsyncStub
    certificates: certificates_pb2_grpc.CertificatesAsyncStub
    tunnels: tunnel_pb2_grpc.TunnelsAsyncStub
    control_plane: registry_pb2_grpc.ControlPlaneAsyncStub

    @classmethod
    def connect(cls, address: str, token: str) -> Stubs:
        channel = open_channel(address, token)
        return cls(
            channel=channel,
            configurations=registry_pb2_grpc.ConfigurationsStub(channel),
            gateways=registry_pb2_grpc.GatewaysStub(channel),
            services=registry_pb2_grpc.ServicesStub(channel),
            replicas=registry_pb2_grpc.ReplicasStub(channel),
            secrets=registry_pb2_grpc.SecretsStub(channel),
            watch=registry_pb2_grpc.WatchStub(channel),
            identity=registry_pb2_grpc.IdentityStub(channel),
            projects=registry_pb2_grpc.ProjectsStub(channel),
            users=registry_pb2_grpc.UsersStub(channel),
            tls_certificates=registry_pb2_grpc.TlsCertificatesStub(channel),
            service_keys=registry_pb2_grpc.ServiceKeysStub(channel),
            backends=registry_pb2_grpc.BackendsStub(channel),
            events=registry_pb2_grpc.EventsStub(channel),
            provisioner=provisioner_pb2_grpc.ProvisionerStub(channel),
            certificates=certificates_pb2_grpc.CertificatesStub(channel),
            tunnels=tunnel_pb2_grpc.TunnelsStub(channel),
            control_plane=registry_pb2_grpc.ControlPlaneStub(channel),
        )

    async def close(self) -> None:
        await self.channel.close()

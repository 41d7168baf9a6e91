"""The registry calls the provisioner makes, as narrow protocols: the generated gRPC stubs (`Stubs`)
satisfy them, and so do the tests' fakes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from gatehouse.client.mirror import WatchCalls
from gatehouse.v1 import registry_pb2, resources_pb2


class GatewayCalls(Protocol):
    def UpdateStatus(self, request: registry_pb2.UpdateGatewayStatusRequest, /) -> Awaitable[object]: ...

    def Get(self, request: registry_pb2.GetRequest, /) -> Awaitable[resources_pb2.Gateway]: ...

    def FinalizeDelete(self, request: registry_pb2.FinalizeRequest, /) -> Awaitable[object]: ...


class ServiceStatusCalls(Protocol):
    def UpdateStatus(
        self, request: registry_pb2.UpdateServiceStatusRequest, /
    ) -> Awaitable[resources_pb2.Service]: ...


class ReplicaCalls(Protocol):
    def Register(self, request: registry_pb2.RegisterReplicaRequest, /) -> Awaitable[object]: ...

    def Unregister(self, request: registry_pb2.UnregisterReplicaRequest, /) -> Awaitable[object]: ...

    def SetProbed(self, request: registry_pb2.SetProbedRequest, /) -> Awaitable[object]: ...


class RunCalls(Protocol):
    def ResolveRun(
        self, request: registry_pb2.ResolveRunRequest, /
    ) -> Awaitable[registry_pb2.ResolvedRun]: ...


class ReplicaStubs(Protocol):
    """What the probes of registered replicas call."""

    @property
    def replicas(self) -> ReplicaCalls: ...


class ServiceStubs(ReplicaStubs, Protocol):
    """What running local services calls."""

    @property
    def services(self) -> ServiceStatusCalls: ...

    @property
    def secrets(self) -> RunCalls: ...


class ProvisionerStubs(ServiceStubs, Protocol):
    """What the provisioner calls: its own gateway calls, the watch, and its parts'."""

    @property
    def watch(self) -> WatchCalls: ...

    @property
    def gateways(self) -> GatewayCalls: ...

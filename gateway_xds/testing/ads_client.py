"""Minimal ADS clients (State-of-the-World and Delta), to drive the xDS server in tests and benchmarks."""

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2


class AdsClient:
    """Speaks ADS like an Envoy would, one explicit request at a time."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str, read_timeout: float = 5.0) -> None:
        self.node_id = node_id
        self._call: grpc.aio.StreamStreamCall[
            discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse
        ] = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        self._read_timeout = read_timeout
        self._node_sent = False

    async def request(
        self,
        type_url: str,
        names: Iterable[str] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        if not self._node_sent:
            request.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster="gatehouse-test"))
            self._node_sent = True
        if error is not None:
            request.error_detail.CopyFrom(
                status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error)
            )
        await self._call.write(request)

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        await self.request(response.type_url, names, version=response.version_info, nonce=response.nonce)

    async def nack(
        self,
        response: discovery_pb2.DiscoveryResponse,
        message: str,
        names: Iterable[str] = (),
        accepted_version: str = "",
    ) -> None:
        await self.request(
            response.type_url, names, version=accepted_version, nonce=response.nonce, error=message
        )

    async def recv(self) -> discovery_pb2.DiscoveryResponse:
        async with asyncio.timeout(self._read_timeout):
            response = await self._call.read()
        if response is grpc.aio.EOF:
            raise EOFError("the server ended the stream")
        return response

    async def status(self) -> grpc.StatusCode:
        """Wait for the end of the stream and return its status code."""
        async with asyncio.timeout(self._read_timeout):
            return await self._call.code()

    async def close(self) -> None:
        await self._call.done_writing()
        self._call.cancel()


class DeltaAdsClient:
    """Speaks Delta ADS like an Envoy would, one explicit request at a time."""

    def __init__(self, channel: grpc.aio.Channel, node_id: str, read_timeout: float = 5.0) -> None:
        self.node_id = node_id
        self._call: grpc.aio.StreamStreamCall[
            discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse
        ] = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
        self._read_timeout = read_timeout
        self._node_sent = False

    async def request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        *,
        unsubscribe: Iterable[str] = (),
        initial_versions: dict[str, str] | None = None,
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            initial_resource_versions=initial_versions or {},
            response_nonce=nonce,
        )
        if not self._node_sent:
            request.node.CopyFrom(base_pb2.Node(id=self.node_id, cluster="gatehouse-test"))
            self._node_sent = True
        if error is not None:
            request.error_detail.CopyFrom(
                status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=error)
            )
        await self._call.write(request)

    async def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.request(response.type_url, nonce=response.nonce)

    async def nack(self, response: discovery_pb2.DeltaDiscoveryResponse, message: str) -> None:
        await self.request(response.type_url, nonce=response.nonce, error=message)

    async def recv(self) -> discovery_pb2.DeltaDiscoveryResponse:
        async with asyncio.timeout(self._read_timeout):
            response = await self._call.read()
        if response is grpc.aio.EOF:
            raise EOFError("the server ended the stream")
        return response

    async def status(self) -> grpc.StatusCode:
        async with asyncio.timeout(self._read_timeout):
            return await self._call.code()

    async def close(self) -> None:
        await self._call.done_writing()
        self._call.cancel()


# Opens a stream as the given node id (the tests' `ads` and `delta` fixtures).
AdsConnect = Callable[[str], Awaitable[AdsClient]]
DeltaConnect = Callable[[str], Awaitable[DeltaAdsClient]]

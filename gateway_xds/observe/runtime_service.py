"""RTDS: each Envoy's runtime layer (gatehouse/envoy_bootstrap.py), over its own State-of-the-World
stream on the xDS port. The layer holds one value, the share of successful requests the Envoy logs
(log_sampling.py), sent again whenever it changes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2, rtds_pb2_grpc
from google.protobuf import any_pb2, struct_pb2

from gatehouse import access_logs
from gateway_xds.observe.log_sampling import LogSampling
from gateway_xds.observe.nodes import node_gateway
from gateway_xds.server.server import ExtraService

log = logging.getLogger(__name__)

RUNTIME_TYPE = "type.googleapis.com/envoy.service.runtime.v3.Runtime"
RUNTIME_SERVICE = rtds_pb2.DESCRIPTOR.services_by_name["RuntimeDiscoveryService"].full_name


def runtime_layer(percent: float) -> rtds_pb2.Runtime:
    """The access log's runtime filter takes the value as its numerator (a number: a structured
    FractionalPercent would not be read), over the filter's own denominator (SHARE_DENOMINATOR)."""
    layer = struct_pb2.Struct()
    layer.update({access_logs.SUCCESS_SHARE_KEY: access_logs.share_numerator(percent)})
    return rtds_pb2.Runtime(name=access_logs.RUNTIME_LAYER, layer=layer)


def _response(percent: float, version: int) -> discovery_pb2.DiscoveryResponse:
    resource = any_pb2.Any()
    resource.Pack(runtime_layer(percent))
    return discovery_pb2.DiscoveryResponse(
        version_info=str(version), resources=[resource], type_url=RUNTIME_TYPE, nonce=str(version)
    )


async def _read_acks(context: grpc.aio.ServicerContext[Any, Any], node: str) -> None:
    """Until the stream ends: Envoy's ACKs, and NACKs, which are logged."""
    while True:
        request = await context.read()
        if request is grpc.aio.EOF:
            return
        if request.HasField("error_detail"):
            log.warning("Envoy %s refused its runtime layer: %s", node, request.error_detail.message)


class RuntimeService(rtds_pb2_grpc.RuntimeDiscoveryServiceServicer):  # type: ignore[misc]  # xds-protos is untyped
    def __init__(self, sampling: LogSampling) -> None:
        self._sampling = sampling

    async def StreamRuntime(
        self, request_iterator: object, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        node = first.node.id
        await node_gateway(node, context)
        if first.type_url != RUNTIME_TYPE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"this stream serves {RUNTIME_TYPE} only")
        self._sampling.attach(node)
        reader = asyncio.ensure_future(_read_acks(context, node))
        try:
            version, sent = 0, None
            while not reader.done():
                changed = self._sampling.changed
                percent = self._sampling.percent(node)
                if percent is not None and percent != sent:
                    version += 1
                    await context.write(_response(percent, version))
                    sent = percent
                waiting = asyncio.ensure_future(changed.wait())
                await asyncio.wait((reader, waiting), return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
        finally:
            reader.cancel()
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                log.info("runtime stream of %s ended: %s", node, reader.exception())
            self._sampling.detach(node)


def runtime_service(sampling: LogSampling) -> ExtraService:
    servicer = RuntimeService(sampling)
    return ExtraService(
        RUNTIME_SERVICE,
        lambda server: rtds_pb2_grpc.add_RuntimeDiscoveryServiceServicer_to_server(servicer, server),
    )

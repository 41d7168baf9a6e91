"""What gateway_xds tells the registry of an Envoy's rejections: each refused resource with its reason,
and the text of the gateway's ERROR column, both kept until the Envoy refuses nothing any more."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from gateway_xds.provider.envoy_reports import RegistryReporter
from gateway_xds.resources import CLUSTER, LISTENER
from gateway_xds.server.reporter import Rejection

NODE, GATEWAY = "gateway/gw-1/0", "gw-1"
REASON = "cannot bind '127.0.0.2:5001': Address already in use"
MESSAGE = f"Error adding/updating listener(s) port-5001: {REASON}"


class FakeGateways:
    def __init__(self) -> None:
        self.reports: list[registry_pb2.ReportEnvoysRequest] = []
        self.received = asyncio.Event()

    async def ReportEnvoys(
        self, request: registry_pb2.ReportEnvoysRequest, timeout: float
    ) -> registry_pb2.ReportEnvoysResponse:
        self.reports.append(request)
        self.received.set()
        return registry_pb2.ReportEnvoysResponse()

    async def next(self) -> registry_pb2.ReportEnvoysRequest:
        async with asyncio.timeout(5):
            await self.received.wait()
        self.received.clear()
        return self.reports[-1]


async def test_refused_resources_are_reported_until_nothing_is_refused() -> None:
    gateways = FakeGateways()
    reporter = RegistryReporter(cast(Stubs, SimpleNamespace(gateways=gateways)))
    task = asyncio.create_task(reporter.run())
    try:
        reporter.connected(NODE, GATEWAY)
        refused = Rejection(LISTENER, "port-5001", "v1", REASON, MESSAGE)
        reporter.rejected(NODE, GATEWAY, LISTENER, "v1", MESSAGE)
        reporter.rejections(NODE, GATEWAY, (refused,))
        reporter.acked(NODE, GATEWAY, 7)
        (envoy,) = (await gateways.next()).envoys
        assert (envoy.node_id, envoy.connected, envoy.acked_revision) == (NODE, True, 7)
        assert [(r.type, r.name, r.reason) for r in envoy.rejected_resources] == [
            ("Listener", "port-5001", REASON)
        ]
        assert envoy.rejected == f"config rejected: {MESSAGE}"
        # Later acknowledgements (of other resources) keep the refusal.
        reporter.acked(NODE, GATEWAY, 8)
        (envoy,) = (await gateways.next()).envoys
        assert envoy.acked_revision == 8 and envoy.rejected == f"config rejected: {MESSAGE}"
        assert [r.name for r in envoy.rejected_resources] == ["port-5001"]
        # Two messages, one per NACK: both shown, each once.
        other = Rejection(CLUSTER, "svc_main_a", "v2", "Invalid duration", "Invalid duration")
        reporter.rejections(NODE, GATEWAY, (refused, other))
        (envoy,) = (await gateways.next()).envoys
        assert envoy.rejected == f"config rejected: {MESSAGE}; Invalid duration"
        assert [r.type for r in envoy.rejected_resources] == ["Listener", "Cluster"]
        reporter.rejections(NODE, GATEWAY, ())
        (envoy,) = (await gateways.next()).envoys
        assert envoy.rejected == "" and not envoy.rejected_resources
    finally:
        task.cancel()

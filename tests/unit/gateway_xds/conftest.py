"""Fixtures of the gateway_xds unit tests.

`pytest --update-golden` (or GATEHOUSE_UPDATE_GOLDEN=1) rewrites the golden files.
"""

import os
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.server.server import XdsServer, build_xds_server
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.ads_client import AdsClient, AdsConnect, DeltaAdsClient, DeltaConnect
from gateway_xds.testing.reporters import RecordingReporter


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    from_option = bool(request.config.getoption("--update-golden", default=False))
    return from_option or os.environ.get("GATEHOUSE_UPDATE_GOLDEN") == "1"


@pytest.fixture
def cache() -> SnapshotCache:
    return SnapshotCache()


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
async def xds_server(cache: SnapshotCache, reporter: RecordingReporter) -> AsyncIterator[XdsServer]:
    server = build_xds_server(cache, NodeIdAuthorizer(), reporter, "127.0.0.1:0")
    await server.start()
    yield server
    await server.stop(grace=None)


@pytest.fixture
async def channel(xds_server: XdsServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{xds_server.port}") as channel:
        yield channel


@pytest.fixture
async def ads(channel: grpc.aio.Channel) -> AsyncIterator[AdsConnect]:
    """Open ADS streams as a given node id; closed at teardown."""
    clients: list[AdsClient] = []

    async def connect(node_id: str) -> AdsClient:
        client = AdsClient(channel, node_id)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


@pytest.fixture
async def delta(channel: grpc.aio.Channel) -> AsyncIterator[DeltaConnect]:
    """Open Delta ADS streams as a given node id; closed at teardown."""
    clients: list[DeltaAdsClient] = []

    async def connect(node_id: str) -> DeltaAdsClient:
        client = DeltaAdsClient(channel, node_id)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()

"""gateway_xds over mTLS: a node is served only the gateway its client certificate names."""

from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

from gateway_xds.autoscale.metrics_sink import NODE_HEADER, MetricsSink
from gateway_xds.autoscale.rates import RequestRates
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.publish import publish
from gateway_xds.resources import CLUSTER
from gateway_xds.server.peer import PeerCertificateAuthorizer
from gateway_xds.server.server import ExtraService, XdsServer, build_xds_server
from gateway_xds.testing.ads_client import AdsClient
from gateway_xds.testing.reporters import RecordingReporter
from services.common.internal_ca import (
    XDS_SERVER_NAME,
    InternalCA,
    gateway_channel_credentials,
    xds_server_credentials,
)
from tests.unit.gateway_xds.test_xds_sotw import gateway, names

CHANNEL_OPTIONS = (("grpc.ssl_target_name_override", XDS_SERVER_NAME),)


@pytest.fixture(scope="module")
def ca() -> InternalCA:
    return InternalCA.create()


@pytest.fixture
async def mtls_server(
    ca: InternalCA, cache: SnapshotCache, reporter: RecordingReporter
) -> AsyncIterator[XdsServer]:
    credentials = xds_server_credentials(ca, [])
    metrics = ExtraService(
        metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
        lambda s: metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            MetricsSink(RequestRates()), s
        ),
    )
    server = build_xds_server(
        cache, PeerCertificateAuthorizer(), reporter, "127.0.0.1:0", credentials, services=(metrics,)
    )
    await server.start()
    yield server
    await server.stop(grace=None)


async def ending(client: AdsClient) -> grpc.StatusCode:
    """How a stream that asks for clusters ends (a refused handshake fails the first write)."""
    try:
        await client.request(CLUSTER)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return await client.status()


Connect = Callable[[grpc.ChannelCredentials, str], AdsClient]


@pytest.fixture
async def connect(mtls_server: XdsServer) -> AsyncIterator[Connect]:
    channels: list[grpc.aio.Channel] = []

    def open_stream(credentials: grpc.ChannelCredentials, node_id: str) -> AdsClient:
        channel = grpc.aio.secure_channel(f"127.0.0.1:{mtls_server.port}", credentials, CHANNEL_OPTIONS)
        channels.append(channel)
        return AdsClient(channel, node_id)

    yield open_stream
    for channel in channels:
        await channel.close()


async def test_a_gateways_certificate_gets_its_own_resources(
    ca: InternalCA, cache: SnapshotCache, connect: Connect
) -> None:
    publish(cache, gateway("gw-a"), 1)
    client = connect(gateway_channel_credentials(ca.client_certificate("gw-a")), "gateway/gw-a/0")
    await client.request(CLUSTER)
    response = await client.recv()
    assert names(response) == {"svc-p-a", "svc-p-b"}


async def test_another_gateways_certificate_is_refused(
    ca: InternalCA, cache: SnapshotCache, connect: Connect
) -> None:
    publish(cache, gateway("gw-b"), 1)
    client = connect(gateway_channel_credentials(ca.client_certificate("gw-a")), "gateway/gw-b/0")
    assert await ending(client) == grpc.StatusCode.PERMISSION_DENIED


async def test_a_client_without_a_certificate_is_refused(
    ca: InternalCA, cache: SnapshotCache, connect: Connect
) -> None:
    publish(cache, gateway("gw-a"), 1)
    client = connect(grpc.ssl_channel_credentials(ca.certificate_pem), "gateway/gw-a/0")
    assert await ending(client) == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_of_another_ca_is_refused(
    ca: InternalCA, cache: SnapshotCache, connect: Connect
) -> None:
    publish(cache, gateway("gw-a"), 1)
    stranger = InternalCA.create().client_certificate("gw-a")
    credentials = grpc.ssl_channel_credentials(ca.certificate_pem, stranger.key_pem, stranger.certificate_pem)
    client = connect(credentials, "gateway/gw-a/0")
    assert await ending(client) == grpc.StatusCode.UNAVAILABLE


async def test_a_plain_text_client_is_refused(cache: SnapshotCache, mtls_server: XdsServer) -> None:
    publish(cache, gateway("gw-a"), 1)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mtls_server.port}") as channel:
        client = AdsClient(channel, "gateway/gw-a/0")
        assert await ending(client) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("node_id", "expected"), [("gateway/gw-a/0", "OK"), ("gateway/gw-b/0", "PERMISSION_DENIED")]
)
async def test_stats_reports_are_taken_for_the_certificates_gateway_only(
    ca: InternalCA, mtls_server: XdsServer, node_id: str, expected: str
) -> None:
    credentials = gateway_channel_credentials(ca.client_certificate("gw-a"))
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{mtls_server.port}", credentials, CHANNEL_OPTIONS
    ) as channel:
        export = metrics_service_pb2_grpc.MetricsServiceStub(channel).Export
        try:
            await export(
                metrics_service_pb2.ExportMetricsServiceRequest(), metadata=((NODE_HEADER, node_id),)
            )
        except grpc.aio.AioRpcError as error:
            assert error.code().name == expected
        else:
            assert expected == "OK"

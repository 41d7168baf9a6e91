"""`gatehouse server` serves xDS over mTLS: local Envoys connect with their gateway's certificate (and
take their runtime layer over RTDS), and a caller without one, or with another gateway's, is refused."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2_grpc

from gatehouse import access_logs
from gateway_xds.observe.runtime_service import RUNTIME_TYPE
from gateway_xds.resources import CLUSTER
from gateway_xds.testing.ads_client import AdsClient
from services.common.internal_ca import XDS_SERVER_NAME
from services.common.probes import unix_http_get
from services.provisioner.backends.local.gateway import CA_FILE, CERTIFICATE_FILE, KEY_FILE
from tests.support.server import ServerProcess

CONNECT_DEADLINE_SECONDS = 30.0
CONNECTED = "control_plane.connected_state: 1"


@pytest.fixture(scope="module")
def gateways(server: ServerProcess) -> dict[str, Path]:
    """Two running local gateways by name → their directory (bootstrap, certificate, key)."""
    directories = {}
    for name in ("mtls-a", "mtls-b"):
        result = server.cli("gateway", "create", "--backend", "local", "--region", "local", "--name", name)
        assert result.code == 0, result.stderr + server.log()
        gateway_id = json.loads(server.cli("gateway", "get", name, "--json").stdout)["id"]
        directories[name] = server.home / "gateways" / gateway_id
    return directories


def credentials(directory: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        (directory / CA_FILE).read_bytes(),
        (directory / KEY_FILE).read_bytes(),
        (directory / CERTIFICATE_FILE).read_bytes(),
    )


async def ending(server: ServerProcess, channel_credentials: grpc.ChannelCredentials, node_id: str) -> str:
    """How an ADS stream as `node_id` ends: OK when it is served clusters, else the refusal's code."""
    options = (("grpc.ssl_target_name_override", XDS_SERVER_NAME),)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{server.xds_port}", channel_credentials, options
    ) as channel:
        client = AdsClient(channel, node_id)
        try:
            await client.request(CLUSTER)
            await client.recv()
        except grpc.aio.AioRpcError as error:
            return error.code().name
        except EOFError:
            return (await client.status()).name
        return "OK"


def node(directory: Path) -> str:
    return f"gateway/{directory.name}/0"


async def test_local_envoys_connect_with_their_gateways_certificate(gateways: dict[str, Path]) -> None:
    for directory in gateways.values():
        bootstrap = json.loads((directory / "bootstrap.json").read_text())
        assert "transport_socket" in bootstrap["static_resources"]["clusters"][0]
        assert stat.S_IMODE((directory / KEY_FILE).stat().st_mode) == 0o600
        admin = bootstrap["admin"]["address"]["pipe"]["path"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_DEADLINE_SECONDS
        body = ""
        while loop.time() < deadline and CONNECTED not in body:
            _, body = await unix_http_get(admin, "/stats?filter=connected_state")
            await asyncio.sleep(0.1)
        assert CONNECTED in body, body
        while loop.time() < deadline and access_logs.SUCCESS_SHARE_KEY not in body:
            _, body = await unix_http_get(admin, "/runtime")
            await asyncio.sleep(0.1)
        share = json.loads(body)["entries"][access_logs.SUCCESS_SHARE_KEY]["final_value"]
        assert float(share) == access_logs.SHARE_DENOMINATOR


async def runtime_ending(
    server: ServerProcess, channel_credentials: grpc.ChannelCredentials, node_id: str
) -> str:
    """How a runtime (RTDS) stream as `node_id` ends: OK when sent the layer, else the refusal's code."""
    options = (("grpc.ssl_target_name_override", XDS_SERVER_NAME),)
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{server.xds_port}", channel_credentials, options
    ) as channel:
        call = rtds_pb2_grpc.RuntimeDiscoveryServiceStub(channel).StreamRuntime()
        request = discovery_pb2.DiscoveryRequest(
            type_url=RUNTIME_TYPE, resource_names=[access_logs.RUNTIME_LAYER]
        )
        request.node.id = node_id
        try:
            await call.write(request)
            response = await call.read()
        except grpc.aio.AioRpcError as error:
            return error.code().name
        call.cancel()
        if response is grpc.aio.EOF:
            return str((await call.code()).name)
        return "OK" if response.resources else "EMPTY"


async def test_a_gateways_certificate_is_served_its_own_node(
    server: ServerProcess, gateways: dict[str, Path]
) -> None:
    a = gateways["mtls-a"]
    assert await ending(server, credentials(a), node(a)) == "OK"


async def test_another_gateways_certificate_is_refused(
    server: ServerProcess, gateways: dict[str, Path]
) -> None:
    a, b = gateways["mtls-a"], gateways["mtls-b"]
    assert await ending(server, credentials(b), node(a)) == "PERMISSION_DENIED"
    assert await runtime_ending(server, credentials(a), node(a)) == "OK"
    assert await runtime_ending(server, credentials(b), node(a)) == "PERMISSION_DENIED"


async def test_a_client_without_a_certificate_is_refused(
    server: ServerProcess, gateways: dict[str, Path]
) -> None:
    a = gateways["mtls-a"]
    no_certificate = grpc.ssl_channel_credentials((a / CA_FILE).read_bytes())
    assert await ending(server, no_certificate, node(a)) == "UNAVAILABLE"

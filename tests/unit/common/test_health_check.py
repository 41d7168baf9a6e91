"""What compose healthchecks and Kubernetes probes ask: `python -m services.common.health_check`
against gateway_xds's plaintext health port, which tells its own servicer's status and nothing else."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2

from gateway_xds.server.health_port import start_health_port
from gateway_xds.server.server import ADS_SERVICE
from services.common.probes import free_port


async def _check(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.common.health_check",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


@pytest.fixture
async def two_ports() -> AsyncIterator[list[tuple[health.aio.HealthServicer, str]]]:
    """Two gateway_xds-like health servicers, each on a health port of its own."""
    ports = []
    servers = []
    for _ in range(2):
        servicer = health.aio.HealthServicer()
        address = f"127.0.0.1:{free_port()}"
        servers.append(await start_health_port(servicer, address))
        ports.append((servicer, address))
    yield ports
    for server in servers:
        await server.stop(None)


async def test_each_port_tells_its_own_servers_status(
    two_ports: list[tuple[health.aio.HealthServicer, str]],
) -> None:
    (serving, serving_address), (starting, starting_address) = two_ports
    await serving.set(ADS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert await _check(serving_address, ADS_SERVICE) == (0, "")
    # The other has not started serving ADS yet.
    code, output = await _check(starting_address, ADS_SERVICE)
    assert code == 1
    assert output == f"unhealthy: {starting_address}: {ADS_SERVICE} is not served there\n"
    # Shutting down one leaves the other as it was.
    await serving.enter_graceful_shutdown()
    await starting.set(ADS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert await _check(serving_address, ADS_SERVICE) == (
        1,
        f"unhealthy: {serving_address}: {ADS_SERVICE} is NOT_SERVING\n",
    )
    assert await _check(starting_address, ADS_SERVICE) == (0, "")


async def test_the_health_port_serves_nothing_but_health(
    two_ports: list[tuple[health.aio.HealthServicer, str]],
) -> None:
    _, address = two_ports[0]
    async with grpc.aio.insecure_channel(address) as channel:
        ads: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            f"/{ADS_SERVICE}/StreamAggregatedResources"
        )
        call = ads(iter(()))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_port_in_use_is_one_line(two_ports: list[tuple[health.aio.HealthServicer, str]]) -> None:
    _, address = two_ports[0]
    with pytest.raises(SystemExit) as refused:
        await start_health_port(health.aio.HealthServicer(), address)
    assert str(refused.value) == (
        f"error: cannot listen on {address} for health checks: the address is in use or not local"
    )


async def test_nothing_listening_or_bad_usage_is_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    code, output = await _check(address)
    assert code == 1
    assert output.startswith(f"unhealthy: {address}: unavailable: ")
    assert output.count("\n") == 1
    for args in ((), ("--help",), ("a:1", "service", "extra")):
        code, output = await _check(*args)
        assert (code, output) == (2, "usage: python -m services.common.health_check HOST:PORT [SERVICE]\n")

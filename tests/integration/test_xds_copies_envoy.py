"""A shared rate limit enforced by real Envoys on a gateway's two hosts, each host's Envoy reaching
only its own copy of gateway_xds (ADS, the rate limit service): the copies count in one Redis, so the
limit is one count for both hosts. The hosts are those of test_xds_policies.py (the second in a
network namespace of its own)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from gatehouse.client.connection import Stubs
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gateway_xds.app import XdsApp
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.upstream import Upstream
from tests.integration.test_xds_policies import (  # noqa: F401 (second_host is a fixture)
    DOMAIN,
    ONE_A_MINUTE,
    Answer,
    Gateway,
    SecondHost,
    second_host,
    statuses,
)
from tests.support.real import require_real
from tests.support.redis import redis_copies
from tests.support.registry import live_registry

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream(b"hello from a replica") as server:
        yield server


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> AsyncIterator[Gateway]:
    """Host 0's Envoy on copy A; `xds_port` is copy B's, where the second host's Envoy streams from."""
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    async with (
        redis_copies() as shared,
        live_registry(tmp_path_factory.mktemp("copies-registry")) as registry,
    ):
        stubs = [Stubs.connect(registry.address, registry.system_token) for _ in range(2)]
        # On every address: the second host reaches its copy at its veth's host end.
        apps = [XdsApp.build(copy_stubs, "0.0.0.0:0", shared=shared()) for copy_stubs in stubs]
        running = [asyncio.create_task(app.run()) for app in apps]
        port = free_port()
        reported = await registry.driver.running_gateway("pol", "0.0.0.0", port, domain=DOMAIN)
        params = BootstrapParams(reported.id, 0, "127.0.0.1", apps[0].port, admin_port=free_port())
        envoy = EnvoyProcess(binary, tmp_path_factory.mktemp("copies-envoy"), render_bootstrap(params))
        envoy.start()
        try:
            await asyncio.to_thread(envoy.wait_ready)
            tokens = {"admin": registry.admin_token}
            yield Gateway(registry, envoy, port, upstream, tokens, reported.id, apps[1].port)
        finally:
            envoy.stop()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for copy_stubs in stubs:
                await copy_stubs.close()


async def test_a_shared_limit_is_one_count_for_hosts_on_different_copies(
    gateway: Gateway,
    second_host: SecondHost,  # noqa: F811
) -> None:
    client = second_host.host_end
    hosts = (replace(gateway, address=client), second_host.gateway)
    limits = [
        {"prefix": "/", "rps": ONE_A_MINUTE, "burst": 3, "scope": "global"},
        # Probes for the service being live spend none of the allowance above.
        {"prefix": "/live", "rps": 1000, "burst": 1000, "scope": "global"},
    ]
    with Upstream(b"hello from the replica both hosts reach", host=client) as replica:
        await gateway.registry.driver.service("shared", "pol", 8000, rate_limits=limits)
        await gateway.registry.driver.replica("shared", "shared-0", f"{client}:{replica.port}")

        async def probe(host: Gateway) -> Answer:
            try:
                return await host.request("shared", "/live", source=client)
            except OSError as error:  # the listener is not there yet
                return Answer(0, {}, str(error))

        for index, host in enumerate(hosts):
            await host.until(functools.partial(probe, host), 200, f"the shared service on host {index}")

        def served(host: Gateway) -> int:
            return sum(host.envoy.stats("cluster.svc_main_shared.upstream_rq_total").values())

        before = [served(host) for host in hosts]
        answers = [await hosts[i % 2].request("shared", "/api", source=client) for i in range(12)]
        # burst + 1 for the client over both hosts and both copies, then 429 until the next token.
        assert statuses(answers) == [200] * 4 + [429] * 8, statuses(answers)
        assert all(a.headers["retry-after"] in ("59", "60") for a in answers[4:])
        after = [served(host) for host in hosts]
        assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2], "each host took its turns"
        assert "hello from the replica both hosts reach" in answers[0].body

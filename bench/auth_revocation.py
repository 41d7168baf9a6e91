"""Benchmark: how soon a revoked token stops opening a service at a real Envoy, and what the gateway's
auth check adds to a request.

An in-process registry and gateway_xds (which pushes each service's credential hashes to Envoy in
its virtual host: a revocation is a route update) and a real Envoy with the provisioner's bootstrap.
Each sample makes a member's token, waits until it opens the service, revokes it, and times the
first 401. Then sequential requests on one
connection to a service with auth and to one without, both without replicas (Envoy answers 503
itself), so that the difference is the check alone.

    .venv/bin/python -m bench.auth_revocation [--samples 20] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import tempfile
import time
from pathlib import Path

from bench.xds_harness import machine, summary_ms
from gatehouse.client.connection import Stubs
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.v1 import registry_pb2
from gateway_xds.app import XdsApp
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.upstream import Upstream
from tests.support.registry import LiveRegistry, live_registry

DOMAIN = "auth.test"
DEADLINE_SECONDS = 20.0


class Client:
    """One kept-alive connection to Envoy."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)

    def status(self, service: str, token: str | None = None) -> int:
        headers = {"Host": f"{service}.{DOMAIN}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._connection.request("GET", "/", headers=headers)
        response = self._connection.getresponse()
        response.read()
        return response.status

    def until(self, service: str, token: str | None, status: int) -> None:
        deadline = time.perf_counter() + DEADLINE_SECONDS
        while self.status(service, token) != status:
            if time.perf_counter() > deadline:
                raise SystemExit(f"{service}: never answered {status}")


async def revocations(registry: LiveRegistry, client: Client, samples: int) -> list[float]:
    elapsed = []
    for index in range(samples):
        name = f"user{index}"
        token = (await registry.admin.users.Create(registry_pb2.CreateUserRequest(name=name))).token
        await registry.admin.projects.SetMember(registry_pb2.SetMemberRequest(project="main", user=name))
        await asyncio.to_thread(client.until, "secure", token, 200)
        started = time.perf_counter()
        await registry.admin.users.RevokeTokens(registry_pb2.RevokeTokensRequest(user=name))
        await asyncio.to_thread(client.until, "secure", token, 401)
        elapsed.append((time.perf_counter() - started) * 1000)
    return elapsed


def latencies(client: Client, service: str, token: str | None, requests: int) -> list[float]:
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        if client.status(service, token) != 503:
            raise SystemExit(f"{service}: a request failed")
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def run(samples: int, requests: int) -> None:
    binary = envoy_binary()
    if binary is None:
        raise SystemExit("no envoy binary")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as work, Upstream(b"ok") as upstream:
        async with live_registry(Path(work)) as registry:
            stubs = Stubs.connect(registry.address, registry.system_token)
            app = XdsApp.build(stubs, "127.0.0.1:0")
            running = asyncio.create_task(app.run())
            port = free_port()
            gateway = await registry.driver.running_gateway("auth", "127.0.0.1", port, domain=DOMAIN)
            params = BootstrapParams(gateway.id, 0, "127.0.0.1", app.port, admin_port=free_port())
            envoy = EnvoyProcess(binary, Path(work) / "envoy", render_bootstrap(params))
            envoy.start()
            try:
                await asyncio.to_thread(envoy.wait_ready)
                await registry.driver.service("secure", "auth", 8000, auth=True)
                await registry.driver.replica("secure", "secure-0", f"127.0.0.1:{upstream.port}")
                await registry.driver.service("idle-secure", "auth", 8000, auth=True)
                await registry.driver.service("idle-open", "auth", 8000)
                client = Client(port)
                await asyncio.to_thread(client.until, "idle-open", None, 503)
                print(
                    f"revoke → first 401 at Envoy: {summary_ms(await revocations(registry, client, samples))}"
                )
                token = registry.admin_token
                await asyncio.to_thread(client.until, "idle-secure", token, 503)
                with_auth = await asyncio.to_thread(latencies, client, "idle-secure", token, requests)
                without = await asyncio.to_thread(latencies, client, "idle-open", None, requests)
                print(f"request with auth (in Envoy):   {summary_ms(with_auth)}")
                print(f"request without auth:           {summary_ms(without)}")
            finally:
                envoy.stop()
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)
                await stubs.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(run(args.samples, args.requests))


if __name__ == "__main__":
    main()

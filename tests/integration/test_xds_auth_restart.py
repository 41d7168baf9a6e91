"""No false 401 across a control-plane restart: a real Envoy keeps sending valid tokens to gateway_xds
while it stops and starts again. Until the new process has loaded the credentials (here held back
until the test lets the registry's list through), a check with a credential waits, then answers 503
with Retry-After; never 401."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from gateway_xds.app import XdsApp
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.load import LoadLoop
from gateway_xds.testing.upstream import Upstream
from services.provisioner.envoy_bootstrap import BootstrapParams, render_bootstrap
from tests.support.http import wait_for_status
from tests.support.real import require_real
from tests.support.registry import LiveRegistry, live_registry

pytestmark = pytest.mark.real

DEADLINE_SECONDS = 30.0
# Answers of each kind a phase waits for.
ENOUGH = 20
SERVED, LOADING, UNAVAILABLE = "served", "loading", "unavailable"


class GatedWatch:
    """The registry's watch whose list waits for `gate`: the restarted control plane serves checks
    without its credentials for as long as the test keeps the gate closed."""

    def __init__(self, watch: registry_pb2_grpc.WatchStub, gate: asyncio.Event) -> None:
        self._watch = watch
        self._gate = gate

    async def Snapshot(self, request: registry_pb2.SnapshotRequest, **options: Any) -> Any:
        await self._gate.wait()
        return await self._watch.Snapshot(request, **options)

    def Watch(self, request: registry_pb2.WatchRequest, **options: Any) -> Any:
        return self._watch.Watch(request, **options)


@dataclasses.dataclass
class ControlPlane:
    """gateway_xds in this process, on a fixed address, stopped and started at will."""

    address: str
    running: asyncio.Task[None] | None = None

    def start(self, stubs: Stubs) -> None:
        self.running = asyncio.create_task(XdsApp.build(stubs, self.address).run())

    async def stop(self) -> None:
        if self.running is not None:
            self.running.cancel()
            await asyncio.gather(self.running, return_exceptions=True)
            self.running = None


@pytest.fixture
async def registry(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveRegistry]:
    async with live_registry(tmp_path_factory.mktemp("restart-registry")) as live:
        yield live


@pytest.fixture
def replicas() -> Iterator[dict[str, Upstream]]:
    with Upstream(b"abacus replica") as abacus, Upstream(b"bursar replica") as bursar:
        yield {"abacus": abacus, "bursar": bursar}


def kind_of(replica: Upstream) -> Callable[[int, Mapping[str, str], bytes], str]:
    def classify(status: int, headers: Mapping[str, str], body: bytes) -> str:
        if status == 200:
            return SERVED if body == replica.body else f"200 from elsewhere: {body!r}"
        if status == 503 and "retry-after" in headers:
            return LOADING if b"loading its credentials" in body else UNAVAILABLE
        return f"{status} {body[:200]!r}"

    return classify


async def until(condition: Callable[[], bool], what: str, loads: Mapping[str, LoadLoop]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while not condition():
        if loop.time() > deadline:
            seen = {name: load.result.kinds for name, load in loads.items()}
            pytest.fail(f"{what}: not within {DEADLINE_SECONDS} s; answers so far: {seen}")
        await asyncio.sleep(0.02)


def served(loads: Mapping[str, LoadLoop]) -> dict[str, int]:
    return {name: load.result.kinds[SERVED] for name, load in loads.items()}


async def test_valid_tokens_never_get_401_across_a_control_plane_restart(
    registry: LiveRegistry, replicas: dict[str, Upstream], tmp_path_factory: pytest.TempPathFactory
) -> None:
    binary = envoy_binary()
    if binary is None:
        require_real("no envoy binary beside the interpreter nor on PATH")
    stubs = Stubs.connect(registry.address, registry.system_token)
    control_plane = ControlPlane(f"127.0.0.1:{free_port()}")
    control_plane.start(stubs)
    gateway = await registry.driver.running_gateway("restarts", "127.0.0.1", free_port())
    xds_port = int(control_plane.address.rsplit(":", 1)[1])
    params = BootstrapParams(gateway.id, 0, "127.0.0.1", xds_port, admin_port=free_port())
    envoy = EnvoyProcess(binary, tmp_path_factory.mktemp("restart-envoy"), render_bootstrap(params))
    loads: dict[str, LoadLoop] = {}
    try:
        envoy.start()
        await asyncio.to_thread(envoy.wait_ready)
        for user, (service, replica) in zip(("pia", "quin"), replicas.items(), strict=True):
            port = free_port()
            await registry.driver.service(service, "restarts", f"{port}:8000", auth=True)
            await registry.driver.replica(service, f"{service}-0", f"127.0.0.1:{replica.port}")
            token = await registry.user_token(user, member=True)
            url = f"http://127.0.0.1:{port}/"
            assert (await asyncio.to_thread(wait_for_status, url, 200, DEADLINE_SECONDS, token))[0] == 200
            bearer = {"Authorization": f"Bearer {token}"}
            loads[service] = LoadLoop(
                port,
                f"127.0.0.1:{port}",
                connections=2,
                pause=0.01,
                headers=bearer,
                classify=kind_of(replica),
            )
        for load in loads.values():
            load.start()
        await until(lambda: min(served(loads).values()) >= ENOUGH, "served before the restart", loads)

        await control_plane.stop()
        gate = asyncio.Event()
        control_plane.start(dataclasses.replace(stubs, watch=GatedWatch(stubs.watch, gate)))

        def checked_unloaded() -> bool:
            """The new control plane has answered checks without its credentials (fixed, 503; not, 401)."""
            return all(load.result.kinds[LOADING] + load.result.statuses[401] >= 2 for load in loads.values())

        await until(checked_unloaded, "checks answered while the credentials load", loads)
        gate.set()
        before = served(loads)
        await until(
            lambda: all(n >= before[name] + ENOUGH for name, n in served(loads).items()),
            "served after the credentials loaded",
            loads,
        )
        settled = {name: dict(load.result.kinds) for name, load in loads.items()}
        again = served(loads)
        await until(
            lambda: all(n >= again[name] + ENOUGH for name, n in served(loads).items()), "served on", loads
        )
    finally:
        # In a thread: the loop's last checks are answered by this event loop.
        results = {name: await asyncio.to_thread(load.stop) for name, load in loads.items()}
        envoy.stop()
        await control_plane.stop()
        await stubs.close()
    for name, result in results.items():
        assert result.statuses[401] == 0, (name, result.summary(), result.kinds)
        assert not result.errors, (name, result.summary())
        assert set(result.kinds) <= {SERVED, LOADING, UNAVAILABLE}, (name, result.kinds)
        assert result.kinds[LOADING] > 0, (name, result.kinds)
        # Once the credentials are loaded, every answer is the replica's.
        settled_kinds = {kind: count for kind, count in result.kinds.items() if kind != SERVED}
        assert settled_kinds == {k: v for k, v in settled[name].items() if k != SERVED}, (name, result.kinds)
    assert sum(result.total for result in results.values()) >= 4 * ENOUGH

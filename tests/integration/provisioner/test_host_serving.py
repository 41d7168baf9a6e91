"""A cloud gateway runs only when its hosts' Envoys serve, end to end: the registry, gateway_xds over
mTLS, the join endpoint and the provisioner in this process, around a simulated cloud whose hosts run
their very startup data (unpacked, joining for their certificate) and then a real Envoy."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gatehouse.v1 import resources_pb2
from services.common.probes import http_get
from tests.integration.provisioner.cloudsim import SimulatedStack, simulated_stack

pytestmark = pytest.mark.real

RUNNING = resources_pb2.GATEWAY_STATE_RUNNING
WAIT_SECONDS = 15.0


async def watch_until(
    stack: SimulatedStack, name: str, done: Callable[[resources_pb2.Gateway], bool]
) -> list[resources_pb2.Gateway]:
    """Every state of the gateway seen, polling, until `done`."""
    seen: list[resources_pb2.Gateway] = []
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                gateway = await stack.gateway(name)
                if not seen or gateway.status != seen[-1].status:
                    seen.append(gateway)
                if done(gateway):
                    return seen
                await asyncio.sleep(0.05)
    except TimeoutError:
        states = [
            (
                g.status.state,
                g.status.message,
                [(e.node_id, e.connected, e.acked_revision) for e in g.status.envoys],
            )
            for g in seen
        ]
        consoles = {host.id: host.console + host.envoy_log() for host in stack.cloud.hosts_by_id.values()}
        raise AssertionError(f"gateway {name}: {states}; hosts: {consoles}") from None


def envoy_of(gateway: resources_pb2.Gateway, index: int) -> resources_pb2.EnvoyStatus | None:
    node = f"gateway/{gateway.id}/{index}"
    return next((envoy for envoy in gateway.status.envoys if envoy.node_id == node), None)


async def test_a_host_runs_only_once_its_envoy_has_acknowledged_and_then_serves(tmp_path: Path) -> None:
    async with simulated_stack(tmp_path, host_deadline=60) as stack:
        await stack.apply_gateway("edge")
        seen = await watch_until(stack, "edge", lambda g: g.status.state == RUNNING)
        running = seen[-1]
        # Running comes with its Envoy connected and having acknowledged the configuration with the
        # listeners on the host's address (written while it was provisioning) ...
        envoy = envoy_of(running, 0)
        assert envoy is not None and envoy.connected, running
        addressed = next(g for g in seen if g.status.listen_address == "127.0.0.1")
        assert envoy.acked_revision >= addressed.resource_version
        assert all(g.status.state != RUNNING for g in seen[:-1])
        assert any(g.status.message == "waiting for Envoy on host 0 to connect" for g in seen), [
            g.status.message for g in seen
        ]
        # ... and its Envoy answers on the gateway's port at once (no route: 404 from Envoy itself).
        status, _ = await http_get("127.0.0.1", running.status.http_port, "/")
        assert status == 404
        [host] = stack.cloud.hosts_by_id.values()
        assert host.script_seconds is not None and "joined:" in host.console


@pytest.mark.parametrize(
    ("failure", "shown"),
    [
        # The script runs to its end, but systemd's `docker run` never gets the image.
        ({"refuse_pulls": 1}, "toomanyrequests"),
        # The script itself fails: no Docker on the image, and apt finds the dpkg lock held.
        ({"apt_locked": 1}, "Could not get lock"),
    ],
    ids=["image-pull-refused", "apt-lock-held"],
)
async def test_a_host_whose_startup_fails_never_runs_and_is_replaced_with_its_console_shown(
    tmp_path: Path, failure: dict[str, Any], shown: str
) -> None:
    async with simulated_stack(tmp_path, host_deadline=3, **failure) as stack:
        await stack.apply_gateway("edge")
        seen = await watch_until(stack, "edge", lambda g: g.status.state == RUNNING)
        first, second = stack.cloud.made
        # The cloud said the first host ran, but the gateway never did while it was there; it was
        # shown with the end of its console output, then deleted.
        assert stack.cloud.deleted == [first]
        assert all(g.status.state != RUNNING for g in seen[:-1])
        replaced = [g.status.message for g in seen if "did not connect within 3s" in g.status.message]
        assert replaced and shown in replaced[0] and "a new host in" in replaced[0], replaced
        assert shown in stack.cloud.hosts_by_id[first].console
        # Its replacement serves.
        envoy = envoy_of(seen[-1], 0)
        assert envoy is not None and envoy.connected
        assert stack.cloud.hosts_by_id[second].envoy is not None
        assert (await http_get("127.0.0.1", seen[-1].status.http_port, "/"))[0] == 404


async def test_each_host_of_a_replicated_gateway_must_serve(tmp_path: Path) -> None:
    async with simulated_stack(tmp_path, host_deadline=3, real_envoy=False, refuse_pulls=1) as stack:
        await stack.apply_gateway("edge", replicas=2)
        seen = await watch_until(stack, "edge", lambda g: g.status.state == RUNNING)
        # Host 0's first try never got its image; host 1 served from the start.
        waiting_for_one = [g for g in seen if g.status.message.startswith("waiting for Envoy on host 0 to")]
        assert waiting_for_one, [g.status.message for g in seen]
        assert all(g.status.state != RUNNING for g in seen[:-1])
        assert len(stack.cloud.deleted) == 1
        for index in (0, 1):
            envoy = envoy_of(seen[-1], index)
            assert envoy is not None and envoy.connected

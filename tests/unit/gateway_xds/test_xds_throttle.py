"""Push coalescing: the throttle alone on a fake clock, then bursts through a real server."""

import asyncio

import grpc

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.incremental import IncrementalGateway
from gateway_xds.ir.backends import Endpoint
from gateway_xds.publish import publish
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE
from gateway_xds.server.server import build_xds_server
from gateway_xds.server.throttle import DEFAULT_BURST, PushThrottle
from gateway_xds.server.watcher import NodeIdAuthorizer
from gateway_xds.testing.ads_client import DeltaAdsClient
from gateway_xds.testing.builders import domain_gateway, domain_route, http_listener, service_name
from gateway_xds.testing.reporters import RecordingReporter


def test_a_lone_change_goes_out_at_once() -> None:
    throttle = PushThrottle(window=0.1, burst=3)
    assert throttle.delay(now=10.0, in_flight=False) is None  # nothing changed
    throttle.note_change()
    assert throttle.delay(now=10.0, in_flight=False) == 0.0
    throttle.pushed(10.0, sent_anything=True)
    # A service and then its replica: the second change goes out at once too.
    throttle.note_change()
    assert throttle.delay(now=10.01, in_flight=False) == 0.0


def test_a_burst_is_held_to_one_push_per_window() -> None:
    throttle = PushThrottle(window=0.1, burst=3)
    now = 10.0
    for _ in range(3):
        throttle.note_change()
        assert throttle.delay(now, in_flight=False) == 0.0
        throttle.pushed(now, sent_anything=True)
        now += 0.001
    throttle.note_change()
    throttle.note_change()
    delay = throttle.delay(now, in_flight=False)
    assert delay is not None and 0.09 < delay <= 0.1
    assert throttle.delay(now + delay, in_flight=False) == 0.0
    # After a quiet period the whole burst is available again.
    throttle.pushed(now + delay, sent_anything=True)
    later = now + delay + 1.0
    for _ in range(3):
        throttle.note_change()
        assert throttle.delay(later, in_flight=False) == 0.0
        throttle.pushed(later, sent_anything=True)


def test_an_unanswered_push_holds_the_next_one() -> None:
    throttle = PushThrottle(window=0.1, max_unanswered=2.0)
    throttle.note_change()
    throttle.pushed(10.0, sent_anything=True)
    throttle.note_change()
    # Unanswered: wait for the answer (or, at most, max_unanswered).
    delay = throttle.delay(now=10.5, in_flight=True)
    assert delay is not None and abs(delay - 1.5) < 1e-9
    assert throttle.delay(now=12.0, in_flight=True) == 0.0
    assert throttle.delay(now=10.5, in_flight=False) == 0.0


def test_a_push_that_sent_nothing_costs_no_token() -> None:
    throttle = PushThrottle(window=0.1, burst=1)
    throttle.note_change()
    throttle.pushed(10.0, sent_anything=False)
    throttle.note_change()
    assert throttle.delay(now=10.0, in_flight=False) == 0.0


def _changing_snapshots(count: int) -> list[Snapshot]:
    """`count` snapshots, each adding or removing a service (built incrementally, so quickly)."""
    gateway = IncrementalGateway("gw-1")
    gateway.set_listeners([http_listener()])
    snapshots = []
    for revision in range(1, count + 1):
        index = revision % 50
        key = str(index)
        if key in gateway.service_keys():
            gateway.remove_service(key)
        else:
            gateway.put_service(key, domain_route(service_name(index), (Endpoint("127.0.0.1", 9000),)))
        snapshots.append(gateway.commit(revision))
    return snapshots


async def _envoy_like(client: DeltaAdsClient, pushes: list[str], stop: asyncio.Event) -> None:
    """ACK everything, and ask for the endpoints of every cluster received."""
    while not stop.is_set():
        try:
            response = await client.recv()
        except TimeoutError:
            continue
        pushes.append(response.type_url)
        await client.ack(response)
        if response.type_url == CLUSTER and response.resources:
            await client.request(ENDPOINT, [r.name for r in response.resources])


async def test_a_burst_of_changes_becomes_a_few_pushes(cache: SnapshotCache) -> None:
    window, changes = 0.1, 1_000
    reporter = RecordingReporter()
    server = build_xds_server(cache, NodeIdAuthorizer(), reporter, "127.0.0.1:0", push_window=window)
    await server.start()
    loop = asyncio.get_running_loop()
    pushes: list[str] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            publish(cache, domain_gateway(0), 0)
            client = DeltaAdsClient(channel, "gateway/gw-1/0", read_timeout=0.2)
            for type_url in (CLUSTER, LISTENER, SCOPED_ROUTE):
                await client.request(type_url)
                await client.ack(await client.recv())
            stop = asyncio.Event()
            node = asyncio.create_task(_envoy_like(client, pushes, stop))
            snapshots = _changing_snapshots(changes)
            started = loop.time()
            for snapshot in snapshots:
                # About a thousand changes a second.
                cache.set_snapshot("gw-1", snapshot)
                await asyncio.sleep(0.001)
            elapsed = loop.time() - started
            async with asyncio.timeout(10):
                # The node ends up with the last snapshot.
                await reporter.wait_for(lambda r: r.kind == "acked" and r.revision == changes)
            stop.set()
            await node
            await client.close()
    finally:
        await server.stop(None)
    push_count = server.stats.of_node("gateway/gw-1/0").pushes
    # At most one push per window, plus the first burst: not one per change.
    assert push_count <= elapsed / window + DEFAULT_BURST + 1, (push_count, elapsed)
    assert push_count < changes / 20, (push_count, elapsed)

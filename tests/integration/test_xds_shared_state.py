"""What copies of gateway_xds share through one real Redis: the shared rate limits' buckets (two
rate limit services, as two copies, admit burst + 1 between them, then the rate), the Envoys'
request counters (pushed to different copies, summed for the autoscaler), and what a copy does when
Redis is gone (rate limit checks answer UNAVAILABLE at once, which Envoy lets through); and a
request held on one copy waits for the Envoys that stream from the other."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import resources_pb2
from gateway_xds.autoscale.metrics_sink import NODE_HEADER, MetricsSink
from gateway_xds.autoscale.redis_rates import RedisRates
from gateway_xds.autoscale.wake import Waker
from gateway_xds.envoy_sync import EnvoySync
from gateway_xds.ir.policies import RateLimit
from gateway_xds.ratelimit.buckets import Take
from gateway_xds.ratelimit.redis_buckets import RedisBuckets
from gateway_xds.ratelimit.server import RateLimitServicer
from gateway_xds.shared.acks import SharedAcks
from gateway_xds.shared.redis import SharedRedis, SharedStateUnavailable, connect
from gateway_xds.testing.reporters import RecordingReporter
from gateway_xds.translate.rate_limits import ADDRESS_KEY, rule_entries
from tests.support.otlp import envoy_push
from tests.support.redis import redis_copies

pytestmark = pytest.mark.real

OK, OVER = rls_pb2.RateLimitResponse.OK, rls_pb2.RateLimitResponse.OVER_LIMIT


@pytest.fixture
async def copies() -> AsyncIterator[Callable[[], SharedRedis]]:
    async with redis_copies() as copy:
        yield copy


@dataclass
class Copy:
    """A gRPC server of one copy of gateway_xds, with the services under test."""

    server: grpc.aio.Server
    channel: grpc.aio.Channel

    @classmethod
    async def start(cls, *servicers: Callable[[grpc.aio.Server], None]) -> Copy:
        server = grpc.aio.server()
        for add in servicers:
            add(server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return cls(server, grpc.aio.insecure_channel(f"127.0.0.1:{port}"))

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop(None)


def _check(backend: str, limit: RateLimit, client: str) -> rls_pb2.RateLimitRequest:
    entries = {**rule_entries(backend, limit), ADDRESS_KEY: client}
    descriptor = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries.items()]
    )
    return rls_pb2.RateLimitRequest(domain="gatehouse", descriptors=[descriptor])


async def _rate_limit_copy(shared: SharedRedis) -> Copy:
    servicer = RateLimitServicer(RedisBuckets(shared))
    return await Copy.start(lambda s: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, s))


async def test_two_copies_admit_the_burst_once_then_the_rate(copies: Callable[[], SharedRedis]) -> None:
    a, b = await _rate_limit_copy(copies()), await _rate_limit_copy(copies())
    stubs = [rls_pb2_grpc.RateLimitServiceStub(copy.channel) for copy in (a, b)]
    limit = RateLimit("/api", requests_per_second=4, burst=3, shared=True)
    try:
        # Alternating between the copies, as a gateway's Envoys would: the burst is counted once.
        burst = [await stubs[i % 2].ShouldRateLimit(_check("svc_a", limit, "10.0.0.1")) for i in range(12)]
        assert [r.overall_code for r in burst].count(OK) == limit.burst + 1
        assert burst[0].overall_code == OK and burst[-1].overall_code == OVER
        refused = next(r for r in burst if r.overall_code == OVER)
        assert [(h.key, h.value) for h in refused.response_headers_to_add] == [("retry-after", "1")]
        # Another client, and the same client of another service, have buckets of their own.
        other = await stubs[1].ShouldRateLimit(_check("svc_a", limit, "10.0.0.2"))
        other_service = await stubs[0].ShouldRateLimit(_check("svc_b", limit, "10.0.0.1"))
        assert other.overall_code == other_service.overall_code == OK
        # Then the rate: over a second and a half of asking every 20 ms, one token per 1/rps.
        admitted, started = 0, time.monotonic()
        while (elapsed := time.monotonic() - started) < 1.5:
            answer = await stubs[admitted % 2].ShouldRateLimit(_check("svc_a", limit, "10.0.0.1"))
            admitted += answer.overall_code == OK
            await asyncio.sleep(0.02)
        elapsed = time.monotonic() - started
        refilled = limit.requests_per_second * elapsed
        assert refilled - 2 <= admitted <= refilled + 1, (admitted, elapsed)
    finally:
        for copy in (a, b):
            await copy.stop()


async def test_one_call_spends_every_descriptor_and_parts_never_run_together(
    copies: Callable[[], SharedRedis],
) -> None:
    buckets = RedisBuckets(copies())
    # Naively joined with ':' these two would be one key: a header value must not reach another's bucket.
    first, second = Take(("gw", "r", "header=a:b"), 1, 0), Take(("gw", "r:header=a", "b"), 1, 0)
    assert await buckets.take_all([first, second], hits=1) == [0, 0]
    waits = await buckets.take_all([first, second, Take(("gw2", "r", "header=a:b"), 1, 0)], hits=1)
    assert waits[0] > 0 and waits[1] > 0 and waits[2] == 0
    # `hits` beyond the capacity is refused without spending anything.
    assert (await buckets.take_all([Take(("gw3", "r", ""), 1, 1)], hits=3))[0] > 0
    assert await buckets.take_all([Take(("gw3", "r", ""), 1, 1)], hits=2) == [0]


async def test_buckets_expire_once_they_would_be_full(copies: Callable[[], SharedRedis]) -> None:
    shared = copies()
    await RedisBuckets(shared).take_all([Take(("gw", "fast", "c"), 100, 0)], hits=1)
    keys = [key async for key in shared.client.scan_iter(match=f"{shared.prefix}*")]
    assert len(keys) == 1
    assert 0 < await shared.client.pttl(keys[0]) <= 1010  # full again in 10 ms, plus a second


async def test_without_redis_checks_are_refused_at_once_and_envoy_lets_them_through() -> None:
    # Nothing listens on the port of a socket that was bound and closed.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gone = connect(f"redis://127.0.0.1:{port}/0", "gatehouse-test:gone:")
    copy = await Copy.start(
        lambda s: rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
            RateLimitServicer(RedisBuckets(gone)), s
        )
    )
    limit = RateLimit("/", requests_per_second=1, shared=True)
    try:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rls_pb2_grpc.RateLimitServiceStub(copy.channel).ShouldRateLimit(_check("svc", limit, "x"))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == "shared rate limits are unavailable"
        # Well within Envoy's own timeout for the answer (GLOBAL_CHECK_TIMEOUT_MS).
        assert time.monotonic() - started < 0.5
        with pytest.raises(SharedStateUnavailable):
            await RedisRates(gone).report("gateway/gw/0", {"svc_x": 1.0})
    finally:
        await copy.stop()
        await gone.close()


async def _sink_copy(rates: RedisRates) -> Copy:
    sink = MetricsSink(rates)
    return await Copy.start(lambda s: metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, s))


async def test_counters_pushed_to_two_copies_make_one_rate(copies: Callable[[], SharedRedis]) -> None:
    sinks = [await _sink_copy(RedisRates(copies())) for _ in range(2)]
    push = [metrics_service_pb2_grpc.MetricsServiceStub(copy.channel).Export for copy in sinks]
    leader = RedisRates(copies())
    try:
        # Node 0 pushes to copy A, then B, then A (Envoy spreads its pushes over the copies); node 1
        # to B only. Service svc_b is another service's counter.
        for step in range(3):
            await push[step % 2](
                envoy_push({"svc_a": 100 * step, "svc_b": 7}), metadata=((NODE_HEADER, "n0"),)
            )
            await push[1](envoy_push({"svc_a": 1000 + 50 * step}), metadata=((NODE_HEADER, "n1"),))
            await asyncio.sleep(0.2)
        await leader.refresh()
        rate = leader.rate("svc_a", time.monotonic(), 30)
        # The expected sum, from the stream's own entries: each node's growth over its time.
        shared = copies()
        # XRANGE's entries (responses decoded): ids and fields.
        entries = cast(list[tuple[str, dict[str, str]]], await shared.client.xrange(shared.key("demand")))
        per_node: dict[str, list[tuple[float, float]]] = {}
        for entry_id, fields in entries:
            totals = json.loads(fields["totals"])
            if "svc_a" in totals:
                per_node.setdefault(fields["node"], []).append((int(entry_id.split("-")[0]), totals["svc_a"]))
        expected = sum((p[-1][1] - p[0][1]) / ((p[-1][0] - p[0][0]) / 1000) for p in per_node.values())
        assert set(per_node) == {"n0", "n1"}
        assert rate == pytest.approx(expected, rel=1e-6) and rate > 0
        assert leader.rate("svc_b", time.monotonic(), 30) == 0
        # Reading again adds nothing that was read already.
        await leader.refresh()
        assert leader.rate("svc_a", time.monotonic(), 30) == pytest.approx(expected, rel=1e-6)
    finally:
        for copy in sinks:
            await copy.stop()


class _AskNobody:
    """The autoscaler's side of a wake is tested in test_xds_copies.py; here the replica is given."""

    def wake(self, service: resources_pb2.Service) -> None:
        pass


async def test_a_hold_on_one_copy_waits_for_the_envoys_of_the_other(
    copies: Callable[[], SharedRedis],
) -> None:
    """Envoy's checks go to any copy: a copy with no Envoy of its own still waits for the Envoy that
    streams its configuration from the other copy, and not for one whose copy is gone."""
    a, b = SharedAcks(copies(), RecordingReporter()), SharedAcks(copies(), RecordingReporter())
    running = [asyncio.create_task(acks.run()) for acks in (a, b)]
    mirror = RegistryMirror()
    service = resources_pb2.Service(id="svc-1", project="main", name="sleepy")
    service.spec.gateway_id = "gw-1"
    mirror.services[service.id] = service
    sync_a = EnvoySync(a)
    sync_b = EnvoySync(b)
    waker = Waker(mirror, sync_a, _AskNobody(), hold_seconds=10, fleet=a)
    try:
        sync_b.connected("gateway/gw-1/0", "gw-1")
        sync_b.connected("gateway/gw-2/0", "gw-2")  # another gateway's, never waited for by gw-1's
        async with asyncio.timeout(10):
            while await a.all_acked("gw-1", 7):  # until copy B's Envoy is known to A
                await asyncio.sleep(0.01)
        assert await a.all_acked("gw-2", 7) is False
        held = asyncio.create_task(waker.hold("svc-1"))
        mirror.replicas["r-1"] = resources_pb2.Replica(
            id="r-1", service_id="svc-1", ready=True, resource_version=7
        )
        await asyncio.sleep(0.3)
        assert not held.done()  # the Envoy on B does not route to the replica yet
        sync_b.acked("gateway/gw-1/0", "gw-1", 7)
        assert await asyncio.wait_for(held, 5) is True
        # One that has not acked holds the next request, until it disconnects or its copy is gone.
        for event in ("connected", "disconnected", "connected"):
            getattr(sync_b, event)("gateway/gw-1/1", "gw-1")
            async with asyncio.timeout(10):
                while await a.all_acked("gw-1", 7) is (event == "connected"):
                    await asyncio.sleep(0.01)
        running[1].cancel()
        await b.close()
        assert await a.all_acked("gw-1", 7)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def test_a_copy_stops_when_cancelled_mid_command(copies: Callable[[], SharedRedis]) -> None:
    """redis-py can swallow a cancellation that arrives while a command runs: the loops of a copy
    (here the rate limit store's) must still end when it stops."""
    buckets = RedisBuckets(copies())

    async def forever() -> None:
        while True:
            await buckets.take_all([Take(("gw", "r", "c"), 1000, 1000)], hits=1)

    for attempt in range(60):
        task = asyncio.create_task(forever())
        await asyncio.sleep(0.0005 * (attempt % 10))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert task in done and task.cancelled(), f"attempt {attempt}: the task went on"

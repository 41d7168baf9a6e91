"""Access-log sampling across copies of gateway_xds sharing one real Redis: an Envoy whose access logs
go to one copy and runtime stream to another is judged on all its entries by the copy that holds the
runtime stream, and the other copy learns the share it marks the entries with; without Redis a copy
judges what it received itself."""

from __future__ import annotations

import pytest

from gateway_xds.observe.log_sampling import LogSampling
from gateway_xds.observe.shared_sampling import RedisSampling
from gateway_xds.shared.redis import connect
from tests.support.redis import redis_copies

pytestmark = pytest.mark.real

NODE, OTHER = "gateway/g1/0", "gateway/g2/0"
BUDGET = 100


def _send(sampling: LogSampling, node: str, successes: int, errors: int = 0) -> list[float | None]:
    return [sampling.received(node, 200) for _ in range(successes)] + [
        sampling.received(node, 502) for _ in range(errors)
    ]


async def test_the_copy_holding_the_runtime_stream_judges_what_every_copy_received() -> None:
    async with redis_copies() as copy:
        holder = LogSampling(BUDGET, shared=RedisSampling(copy()))
        other = LogSampling(BUDGET, shared=RedisSampling(copy()))
        holder.attach(NODE)
        other.attach(OTHER)
        assert set(_send(other, NODE, 990, errors=10)) == {None}  # not yet known there
        _send(holder, NODE, 10)
        assert await other.step(1.0) == []
        assert await holder.step(1.0) == [NODE]
        assert holder.percent(NODE) == 4  # 40 of the 1,000 successes: the errors took 10 of 50
        assert set(_send(other, NODE, 40)) == {None}
        assert await holder.step(1.0) == []  # settling; publishes the new share
        await other.step(1.0)
        assert set(_send(other, NODE, 1)) == {4}
        assert other.percent(OTHER) == 100
        # 41 entries a second at 4% (1,025 offered) are within the budget: nothing changes.
        assert await holder.step(1.0) == [] and holder.percent(NODE) == 4


async def test_without_redis_a_copy_judges_what_it_received() -> None:
    unreachable = connect("redis://127.0.0.1:1/0")
    try:
        sampling = LogSampling(BUDGET, shared=RedisSampling(unreachable))
        sampling.attach(NODE)
        _send(sampling, NODE, 1000)
        assert await sampling.step(1.0) == [NODE]
        assert sampling.percent(NODE) == 5
    finally:
        await unreachable.close()

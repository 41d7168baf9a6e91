"""The registry's read cache never serves an answer older than the last write to its project."""

from __future__ import annotations

import asyncio

from gatehouse.v1 import registry_pb2
from services.registry.api.read_cache import ReadCache


def _answer(name: str) -> registry_pb2.Project:
    return registry_pb2.Project(name=name)


async def test_hits_until_a_write_to_the_same_project() -> None:
    cache = ReadCache()
    loads = []

    async def load() -> registry_pb2.Project:
        loads.append(1)
        return _answer(f"v{len(loads)}")

    assert (await cache.get(("k", "a"), load)).name == "v1"
    assert (await cache.get(("k", "a"), load)).name == "v1"
    cache.invalidate({"b"})
    assert (await cache.get(("k", "a"), load)).name == "v1"
    cache.invalidate({"a"})
    assert (await cache.get(("k", "a"), load)).name == "v2"
    cache.invalidate(None)
    assert (await cache.get(("k", "a"), load)).name == "v3"


async def test_an_answer_read_across_a_write_is_not_kept() -> None:
    cache = ReadCache()
    release = asyncio.Event()

    async def slow() -> registry_pb2.Project:
        await release.wait()
        return _answer("stale")

    reading = asyncio.create_task(cache.get(("k", "a"), slow))
    await asyncio.sleep(0)
    cache.invalidate({"a"})  # a write commits while the read is in flight
    release.set()
    assert (await reading).name == "stale"  # that caller saw the old state, as it would without a cache

    async def fresh() -> registry_pb2.Project:
        return _answer("fresh")

    assert (await cache.get(("k", "a"), fresh)).name == "fresh"

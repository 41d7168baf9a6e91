"""The bulk gate lets a few streams build first syncs at once and trims the heap once they are done."""

import asyncio

from gateway_xds.server.bulk_gate import BulkGate

SETTLE = 0.02


class Releases:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> bool:
        self.count += 1
        return True


async def test_the_heap_is_trimmed_once_after_the_last_bulk_stream() -> None:
    releases = Releases()
    gate = BulkGate(2, settle_seconds=SETTLE, release=releases)
    inside = 0
    most_inside = 0

    async def bulk_stream(hold: float) -> None:
        nonlocal inside, most_inside
        async with gate:
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(hold)
            inside -= 1

    await asyncio.gather(*(bulk_stream(SETTLE * 2) for _ in range(5)))
    assert most_inside == 2
    await asyncio.sleep(SETTLE * 3)
    assert releases.count == 1


async def test_no_trim_while_a_bulk_stream_is_at_work() -> None:
    releases = Releases()
    gate = BulkGate(4, settle_seconds=SETTLE, release=releases)
    async with gate:
        pass
    async with gate:
        await asyncio.sleep(SETTLE * 3)  # the trim the first one scheduled was called off
        assert releases.count == 0
    await asyncio.sleep(SETTLE * 3)
    assert releases.count == 1

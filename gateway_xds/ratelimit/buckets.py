"""Token buckets shared by all of a gateway's Envoys: `burst + 1` tokens, refilled at `rps`."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# Buckets kept at most; the least recently used go first (a full bucket is the same as a new one).
MAX_BUCKETS = 200_000


@dataclass(frozen=True)
class Take:
    """Spend from `key`'s bucket: `burst + 1` tokens, refilled at `rps`."""

    key: tuple[str, ...]
    rps: float
    burst: int


class BucketStore(Protocol):
    async def take_all(self, takes: Sequence[Take], hits: int) -> list[float]:
        """Spend `hits` tokens of each bucket: 0 for each allowed, else the seconds until it would be
        (nothing is spent from that one then)."""
        ...


@dataclass
class _Bucket:
    tokens: float
    at: float


class SharedBuckets:
    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self._buckets: OrderedDict[tuple[str, ...], _Bucket] = OrderedDict()
        self._max = max_buckets

    def take(self, key: tuple[str, ...], rps: float, burst: int, hits: int, now: float) -> float:
        """Spend `hits` tokens of `key`'s bucket; 0 when allowed, else the seconds until they would be
        (nothing is spent then)."""
        capacity = burst + 1.0
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(capacity, now)
        else:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.at) * rps)
            bucket.at = now
        self._buckets[key] = bucket
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        if bucket.tokens >= hits:
            bucket.tokens -= hits
            return 0.0
        return (hits - bucket.tokens) / rps

    def __len__(self) -> int:
        return len(self._buckets)


class LocalBuckets:
    """The BucketStore of one process (no Redis): its buckets, on its clock."""

    def __init__(self, buckets: SharedBuckets, clock: Callable[[], float] = time.monotonic) -> None:
        self._buckets = buckets
        self._clock = clock

    async def take_all(self, takes: Sequence[Take], hits: int) -> list[float]:
        now = self._clock()
        return [self._buckets.take(take.key, take.rps, take.burst, hits, now) for take in takes]


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))

"""Token buckets shared by all of a gateway's Envoys: `burst + 1` tokens, refilled at `rps`."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

# Buckets kept at most; the least recently used go first (a full bucket is the same as a new one).
MAX_BUCKETS = 200_000


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


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))

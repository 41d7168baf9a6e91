"""Shared rate-limit buckets on a made-up clock: burst + 1 at once, then the rate; the wait until the
next token is what Retry-After says."""

from __future__ import annotations

import pytest

from gateway_xds.ratelimit.buckets import SharedBuckets, retry_after_seconds


def test_burst_then_the_rate() -> None:
    buckets = SharedBuckets()
    key = ("gw", "svc|/", "remote_address=10.0.0.1")
    assert [buckets.take(key, rps=2, burst=2, hits=1, now=0) for _ in range(3)] == [0, 0, 0]
    assert buckets.take(key, rps=2, burst=2, hits=1, now=0) == pytest.approx(0.5)
    assert buckets.take(key, rps=2, burst=2, hits=1, now=0.5) == 0  # one token came back
    assert buckets.take(("gw", "svc|/", "remote_address=10.0.0.2"), rps=2, burst=2, hits=1, now=0.5) == 0
    assert buckets.take(key, rps=2, burst=2, hits=1, now=100) == 0  # full again, never above burst + 1
    assert [buckets.take(key, rps=2, burst=2, hits=1, now=100) for _ in range(3)][-1] > 0


def test_one_a_minute_waits_a_minute_and_old_buckets_make_room() -> None:
    buckets = SharedBuckets(max_buckets=2)
    assert buckets.take(("a",), rps=1 / 60, burst=0, hits=1, now=0) == 0
    assert retry_after_seconds(buckets.take(("a",), rps=1 / 60, burst=0, hits=1, now=0)) == 60
    buckets.take(("b",), rps=1, burst=0, hits=1, now=0)
    buckets.take(("c",), rps=1, burst=0, hits=1, now=0)
    assert len(buckets) == 2

"""What copies of gateway_xds share live in Redis when `GATEHOUSE_REDIS_URL` is set: the shared
rate limits' token buckets, the Envoys' request counters the autoscaler reads, and the requests to
wake a service. Without it (one process, the embedded default) all of it stays in memory.

Redis answers every Envoy-facing question within a few milliseconds, keeps counters that expire by
themselves, and runs a check-and-spend as one script on its own clock; a copy that cannot reach it
logs a warning (at most every WARN_EVERY_SECONDS) and lets traffic through, as Envoy does when its
rate limit service fails (translate/rate_limits.py: failure_mode_deny is off)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_URL_ENV = "GATEHOUSE_REDIS_URL"
KEY_PREFIX = "gatehouse:xds:"
# Below Envoy's own timeout for a rate limit answer (GLOBAL_CHECK_TIMEOUT_MS): a slow Redis makes the
# copy answer "unavailable" in time, which lets the request through, instead of Envoy timing out.
TIMEOUT_SECONDS = 0.25
WARN_EVERY_SECONDS = 10.0

# What a Redis call raises when Redis cannot answer (down, unreachable, too slow).
RedisUnavailable = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class SharedStateUnavailable(Exception):
    """Redis did not answer; the warning is logged already."""


@dataclass
class SharedRedis:
    client: redis.asyncio.Redis
    prefix: str = KEY_PREFIX
    _warned_at: dict[str, float] = field(default_factory=dict)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def call(self, what: str, command: Awaitable[T]) -> T:
        """Runs a Redis command (`what` names it in warnings); SharedStateUnavailable when Redis does
        not answer. A cancellation that arrives mid-command, which redis-py can swallow (the command
        then ends as if nothing happened, or as a connection error), is raised again here."""
        try:
            result = await command
        except RedisUnavailable as error:
            _raise_if_cancelled()
            raise self.unavailable(what, error) from None
        _raise_if_cancelled()
        return result

    def unavailable(self, what: str, error: Exception) -> SharedStateUnavailable:
        """The error to raise; logs one warning per `what` every WARN_EVERY_SECONDS, however many
        requests fail."""
        now = time.monotonic()
        if now - self._warned_at.get(what, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._warned_at[what] = now
            log.warning("%s: Redis is unavailable (%s)", what, str(error) or type(error).__name__)
        return SharedStateUnavailable(what)

    async def close(self) -> None:
        await self.client.aclose()


def _raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def connect(url: str, prefix: str = KEY_PREFIX) -> SharedRedis:
    """A client for `url` (redis://, rediss:// or unix://); connects on first use."""
    try:
        client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
    except ValueError as error:
        raise SystemExit(
            f"error: {REDIS_URL_ENV} is not a Redis URL ({error}): use redis://HOST:PORT/DB"
        ) from None
    return SharedRedis(client, prefix)


def from_env() -> SharedRedis | None:
    """Redis when `GATEHOUSE_REDIS_URL` is set, else None (state stays in this process)."""
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    return connect(url) if url else None

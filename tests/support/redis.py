"""Redis for tests: each user gets keys under a prefix of its own, removed afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis.asyncio
import redis.exceptions

from gateway_xds.shared.redis import SharedRedis, connect
from tests.support.real import require_real

REDIS_URL = os.environ.get("GATEHOUSE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@asynccontextmanager
async def redis_copies() -> AsyncIterator[Callable[[], SharedRedis]]:
    """Makes clients of one key space, as copies of gateway_xds would each have (a client per call)."""
    prefix = f"gatehouse-test:{secrets.token_hex(6)}:"
    admin = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await admin.ping()
    except (redis.exceptions.ConnectionError, OSError) as error:
        await admin.aclose()
        require_real(f"Redis is not reachable at {REDIS_URL}: {error}")
    clients: list[SharedRedis] = []

    def copy() -> SharedRedis:
        clients.append(connect(REDIS_URL, prefix))
        return clients[-1]

    try:
        yield copy
    finally:
        for client in clients:
            await client.close()
        async for key in admin.scan_iter(match=f"{prefix}*"):
            await admin.delete(key)
        await admin.aclose()

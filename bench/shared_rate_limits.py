"""Benchmark: what a shared rate limit check costs, kept in this process's memory (one copy), in
Redis (copies: gateway_xds/ratelimit/redis_buckets.py), and, for comparison only, as a row per
bucket in PostgreSQL (the same token bucket as one upsert, the row locked for its transaction).

`--clients` concurrent checkers each spend one token at a time, spread over `--buckets` buckets
(many clients of a rule) and then all on one (one client hammering), for `--seconds` each.

    .venv/bin/python -m bench.shared_rate_limits [--clients 32] [--buckets 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable

import asyncpg

from bench.xds_harness import machine, summary_ms
from gateway_xds.ratelimit.buckets import LocalBuckets, SharedBuckets, Take
from gateway_xds.ratelimit.redis_buckets import RedisBuckets
from gateway_xds.shared.redis import connect
from tests.support.databases import POSTGRES_ADMIN_DSN
from tests.support.redis import REDIS_URL

# The same bucket as the Lua script: refill since `at`, spend if there is enough, on the server's clock.
_POSTGRES_TAKE = """
INSERT INTO buckets AS b (key, tokens, at) VALUES ($1, $3 - 1, clock_timestamp())
ON CONFLICT (key) DO UPDATE SET
  tokens = CASE WHEN LEAST($3, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.at) * $2) >= 1
           THEN LEAST($3, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.at) * $2) - 1
           ELSE LEAST($3, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.at) * $2) END,
  at = clock_timestamp()
RETURNING tokens
"""

Check = Callable[[Take], Awaitable[object]]


async def _measure(check: Check, clients: int, buckets: int, seconds: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client(index: int) -> None:
        n = index
        while time.monotonic() < deadline:
            take = Take(("gw", "svc|/", f"remote_address=10.0.{n % buckets // 256}.{n % 256}"), 1000.0, 100)
            started = time.perf_counter()
            await check(take)
            latencies.append((time.perf_counter() - started) * 1000)
            n += clients

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, len(latencies)


async def main(clients: int, buckets: int, seconds: float) -> None:
    print(f"shared rate limit checks on {machine()}; os.cpu_count()={os.cpu_count()}")
    print(f"{clients} concurrent checkers, {seconds:.0f} s per row\n")
    memory = LocalBuckets(SharedBuckets())
    shared = connect(REDIS_URL, f"gatehouse-bench:{secrets.token_hex(4)}:")
    redis_buckets = RedisBuckets(shared)
    database = f"gatehouse_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    await admin.execute(f"CREATE DATABASE {database}")
    pool = await asyncpg.create_pool(
        POSTGRES_ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}", min_size=1, max_size=clients
    )
    await pool.execute("CREATE TABLE buckets (key text PRIMARY KEY, tokens float8, at timestamptz)")

    async def in_postgres(take: Take) -> object:
        return await pool.fetchval(_POSTGRES_TAKE, "|".join(take.key), take.rps, float(take.burst + 1))

    stores: list[tuple[str, Check]] = [
        ("memory (one copy)", lambda take: memory.take_all([take], 1)),
        ("Redis (copies)", lambda take: redis_buckets.take_all([take], 1)),
        ("PostgreSQL row (comparison)", in_postgres),
    ]
    try:
        for spread, label in ((buckets, f"{buckets} buckets"), (1, "one bucket")):
            for name, check in stores:
                latencies, count = await _measure(check, clients, spread, seconds)
                print(f"{label:>12} {name:28} {count / seconds:9.0f} checks/s  {summary_ms(latencies)}")
    finally:
        await pool.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        await admin.close()
        async for key in shared.client.scan_iter(match=f"{shared.prefix}*"):
            await shared.client.delete(key)
        await shared.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--buckets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(main(args.clients, args.buckets, args.seconds))

"""The shared token buckets in Redis, for copies of gateway_xds: one script call per request checks
and spends every descriptor's bucket at once, on Redis's clock (copies' clocks never matter). A
bucket's key lives until the bucket would be full again: a missing bucket is a full one."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from gateway_xds.ratelimit.buckets import Take
from gateway_xds.shared.redis import SharedRedis

# KEYS: the buckets; ARGV: hits, then rps and capacity per bucket. Returns each wait, as text (Lua
# numbers come back to Redis as integers).
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local hits = tonumber(ARGV[1])
local waits = {}
for i, key in ipairs(KEYS) do
  local rps = tonumber(ARGV[2 * i])
  local capacity = tonumber(ARGV[2 * i + 1])
  local stored = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = capacity
  if stored[1] then
    local elapsed = math.max(0, now - tonumber(stored[2]))
    tokens = math.min(capacity, tonumber(stored[1]) + elapsed * rps)
  end
  local wait = 0
  if tokens >= hits then
    tokens = tokens - hits
  else
    wait = (hits - tokens) / rps
  end
  redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'at', string.format('%.6f', now))
  redis.call('PEXPIRE', key, math.ceil((capacity - tokens) / rps * 1000) + 1000)
  waits[i] = string.format('%.17g', wait)
end
return waits
"""


class RedisBuckets:
    """A BucketStore shared by every copy that uses the same Redis and prefix."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared
        self._script = shared.client.register_script(_TAKE)

    def _key(self, take: Take) -> str:
        # Each part escaped (a client's header value may hold ':'), the gateway in braces: all of a
        # request's buckets hash to one Redis Cluster slot.
        gateway, *rest = (quote(part, safe="") for part in take.key)
        return self._shared.key("bucket", "{" + gateway + "}", *rest)

    async def take_all(self, takes: Sequence[Take], hits: int) -> list[float]:
        """Raises SharedStateUnavailable when Redis does not answer."""
        if not takes:
            return []
        arguments: list[float] = [hits]
        for take in takes:
            arguments += [take.rps, take.burst + 1]
        keys = [self._key(take) for take in takes]
        waits = await self._shared.call("shared rate limits", self._script(keys=keys, args=arguments))
        return [float(wait) for wait in waits]

"""Which revision every connected Envoy of a gateway has applied, over all copies of gateway_xds: an
Envoy asks any copy to hold a request (the wake check), not only the one it streams its
configuration from, so the holder must know when Envoys on other copies route to the new replica.

Each copy writes its Envoys' acknowledged revisions into one Redis hash per gateway (node → "copy
revision"), rewrites them every second, and keeps a key of its own alive meanwhile; a node whose
copy's key expired (the copy died) is not waited for. A reporter between EnvoySync and the next."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from gateway_xds.server.reporter import Rejection, SyncReporter
from gateway_xds.shared.redis import RedisUnavailable, SharedRedis

REWRITE_SECONDS = 1.0
# A copy that has not written for this long is gone; its nodes are not waited for.
COPY_TTL_MS = 5_000
# A gateway's hash outlives every copy's last write by this much.
HASH_TTL_MS = 3_600_000
# Reports are written together after this pause.
FLUSH_SECONDS = 0.02

# KEYS: the gateway's hash; ARGV: node, copy. Removes the node only if this copy wrote it last.
_FORGET = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.match(held, '^(%S+)') == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""

# KEYS: the gateway's hash; ARGV: revision, copy key prefix. 1 when every node of a live copy has it.
_ALL_ACKED = """
local wanted = tonumber(ARGV[1])
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local copy, revision = string.match(entries[i + 1], '^(%S+) (%d+)$')
  if copy and redis.call('EXISTS', ARGV[2] .. copy) == 1 and tonumber(revision) < wanted then
    return 0
  end
end
return 1
"""


class SharedAcks:
    def __init__(self, shared: SharedRedis, then: SyncReporter) -> None:
        self._shared = shared
        self._then = then
        self._copy = secrets.token_hex(8)
        # gateway id -> node id -> revision, of this copy's connected Envoys
        self._nodes: dict[str, dict[str, int]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._flush = asyncio.Event()
        self._forget = shared.client.register_script(_FORGET)
        self._all_acked = shared.client.register_script(_ALL_ACKED)

    def _hash(self, gateway_id: str) -> str:
        return self._shared.key("acks", "{" + gateway_id + "}")

    def _copy_key(self, copy: str) -> str:
        return self._shared.key("copy", copy)

    def _changed(self, node_id: str, gateway_id: str) -> None:
        self._dirty.add((gateway_id, node_id))
        self._flush.set()

    def connected(self, node_id: str, gateway_id: str) -> None:
        self._nodes.setdefault(gateway_id, {})[node_id] = 0
        self._changed(node_id, gateway_id)
        self._then.connected(node_id, gateway_id)

    def disconnected(self, node_id: str, gateway_id: str) -> None:
        nodes = self._nodes.get(gateway_id, {})
        nodes.pop(node_id, None)
        if not nodes:
            self._nodes.pop(gateway_id, None)
        self._changed(node_id, gateway_id)
        self._then.disconnected(node_id, gateway_id)

    def acked(self, node_id: str, gateway_id: str, revision: int) -> None:
        nodes = self._nodes.setdefault(gateway_id, {})
        nodes[node_id] = max(nodes.get(node_id, 0), revision)
        self._changed(node_id, gateway_id)
        self._then.acked(node_id, gateway_id, revision)

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        self._then.rejected(node_id, gateway_id, type_url, version, message)

    def rejections(self, node_id: str, gateway_id: str, rejected: tuple[Rejection, ...]) -> None:
        self._then.rejections(node_id, gateway_id, rejected)

    async def all_acked(self, gateway_id: str, revision: int) -> bool:
        """Whether every connected Envoy of the gateway, on any live copy, has applied `revision`."""
        try:
            return bool(
                await self._all_acked(keys=[self._hash(gateway_id)], args=[revision, self._copy_key("")])
            )
        except RedisUnavailable as error:
            raise self._shared.unavailable("Envoys' acknowledgements", error) from None

    async def run(self) -> None:
        """Writes what changed as it changes, and everything (and this copy's key) every second."""
        loop = asyncio.get_running_loop()
        rewrite_at = loop.time()
        while True:
            timeout = max(0.0, rewrite_at - loop.time())
            try:
                await asyncio.wait_for(self._flush.wait(), timeout)
                await asyncio.sleep(FLUSH_SECONDS)
            except TimeoutError:
                pass
            self._flush.clear()
            everything = loop.time() >= rewrite_at
            dirty, self._dirty = self._dirty, set()
            try:
                await self._write(dirty, everything)
            except RedisUnavailable as error:
                self._shared.unavailable("Envoys' acknowledgements", error)
                self._dirty |= dirty
                continue
            if everything:
                rewrite_at = loop.time() + REWRITE_SECONDS

    async def _write(self, dirty: set[tuple[str, str]], everything: bool) -> None:
        async with self._shared.client.pipeline(transaction=False) as pipeline:
            pipeline.set(self._copy_key(self._copy), "1", px=COPY_TTL_MS)
            written = set()
            for gateway_id, nodes in self._nodes.items() if everything else ():
                for node_id, revision in nodes.items():
                    pipeline.hset(self._hash(gateway_id), node_id, f"{self._copy} {revision}")
                    written.add((gateway_id, node_id))
                pipeline.pexpire(self._hash(gateway_id), HASH_TTL_MS)
            for gateway_id, node_id in dirty - written:
                revision = self._nodes.get(gateway_id, {}).get(node_id)
                if revision is None:
                    key = self._hash(gateway_id)
                    await self._forget(keys=[key], args=[node_id, self._copy], client=pipeline)
                else:
                    pipeline.hset(self._hash(gateway_id), node_id, f"{self._copy} {revision}")
                    pipeline.pexpire(self._hash(gateway_id), HASH_TTL_MS)
            await pipeline.execute()

    async def close(self) -> None:
        """A clean stop: this copy's nodes are not waited for from now on."""
        with contextlib.suppress(RedisUnavailable):
            await self._shared.client.delete(self._copy_key(self._copy))

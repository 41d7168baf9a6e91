"""The Envoys of a gateway over all copies of gateway_xds, each Envoy streaming from one of them.

Which revision each has applied: an Envoy asks any copy to hold a request (the wake check), not only
the one it streams its configuration from, so the holder must know when Envoys on other copies route
to the new replica. Each copy writes its Envoys' acknowledged revisions into one Redis hash per
gateway (node → "copy revision"), rewrites them every second, and keeps a key of its own alive
meanwhile; a node whose copy's key expired (the copy died) is not waited for. A reporter between
EnvoySync and the next.

Their status on the gateway (`ReportEnvoys` replaces the gateway's whole list): each copy reports the
Envoys of every live copy, merged in a second hash, and reports again if another copy changed it
while it did (`merged`, `version`), so the last report is everyone's."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import Sequence

from gatehouse.v1 import resources_pb2
from gateway_xds.server.reporter import Rejection, SyncReporter
from gateway_xds.shared.redis import RedisUnavailable, SharedRedis, SharedStateUnavailable

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


# KEYS: the gateway's statuses, its version; ARGV: this copy, the copy key prefix, how long the keys
# live (ms), then for each of this copy's Envoys: node, connected (1 or 0), the stamp of its
# connection (0 for a new one), its status. An Envoy streams from one copy at a time: a new connection
# takes the node (stamped with Redis's time), a copy whose connection is older than the holder's, or
# that reports it gone while another live copy has it, writes nothing. The version grows only with a
# change. Returns the version, each node's stamp, then every live copy's statuses.
_MERGE = """
local clock = redis.call('TIME')
local now = clock[1] .. string.format('%06d', tonumber(clock[2]))
local me, copies, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local changed = false
local stamps = {}
for i = 4, #ARGV, 4 do
  local node, connected, stamp, status = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local held = redis.call('HGET', KEYS[1], node)
  local copy, on, since = nil, nil, nil
  if held then copy, on, since = string.match(held, '^(%S+) (%d) (%d+) ') end
  local other = copy and copy ~= me and redis.call('EXISTS', copies .. copy) == 1
  local write = true
  if connected == '1' and stamp == '0' then
    stamp = now
  elseif other and on == '1' and (connected == '0' or tonumber(since) > tonumber(stamp)) then
    write = false
  end
  local value = me .. ' ' .. connected .. ' ' .. stamp .. ' ' .. status
  if write and held ~= value then
    redis.call('HSET', KEYS[1], node, value)
    changed = true
  end
  table.insert(stamps, stamp)
end
redis.call('PEXPIRE', KEYS[1], ttl)
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if changed then version = redis.call('INCR', KEYS[2]) end
redis.call('PEXPIRE', KEYS[2], ttl)
local merged = {tostring(version), #stamps}
for _, stamp in ipairs(stamps) do table.insert(merged, stamp) end
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local copy, status = string.match(entries[i + 1], '^(%S+) %d %d+ (%S*)$')
  if copy and redis.call('EXISTS', copies .. copy) == 1 then table.insert(merged, status) end
end
return merged
"""


class SharedAcks:
    def __init__(self, shared: SharedRedis, then: SyncReporter) -> None:
        self._shared = shared
        self._then = then
        self._copy = secrets.token_hex(8)
        # gateway id -> node id -> revision, of this copy's connected Envoys
        self._nodes: dict[str, dict[str, int]] = {}
        self._dirty: set[tuple[str, str]] = set()
        # (gateway id, node id) -> when Redis saw this copy's connection of the node first
        self._stamps: dict[tuple[str, str], str] = {}
        self._flush = asyncio.Event()
        self._forget = shared.client.register_script(_FORGET)
        self._all_acked = shared.client.register_script(_ALL_ACKED)
        self._merge = shared.client.register_script(_MERGE)

    def _hash(self, gateway_id: str) -> str:
        return self._shared.key("acks", "{" + gateway_id + "}")

    def _statuses(self, gateway_id: str) -> list[str]:
        gateway = "{" + gateway_id + "}"
        return [self._shared.key("envoys", gateway), self._shared.key("envoys-version", gateway)]

    async def merged(
        self, gateway_id: str, own: Sequence[resources_pb2.EnvoyStatus]
    ) -> tuple[list[resources_pb2.EnvoyStatus], int]:
        """Writes this copy's Envoys of the gateway; returns every live copy's, and their version."""
        arguments: list[str | int] = [self._copy, self._copy_key(""), HASH_TTL_MS]
        for envoy in own:
            stamp = self._stamps.get((gateway_id, envoy.node_id), "0") if envoy.connected else "0"
            encoded = base64.b64encode(envoy.SerializeToString()).decode()
            arguments += [envoy.node_id, int(envoy.connected), stamp, encoded]
        # This copy is live before its Envoys are shown (its key is also rewritten every second).
        alive = self._shared.client.set(self._copy_key(self._copy), "1", px=COPY_TTL_MS)
        await self._shared.call("Envoys' status", alive)
        merge = self._merge(keys=self._statuses(gateway_id), args=arguments)
        version, count, *rest = await self._shared.call("Envoys' status", merge)
        stamps, statuses = rest[: int(count)], rest[int(count) :]
        for envoy, stamp in zip(own, stamps, strict=True):
            if envoy.connected:
                self._stamps[(gateway_id, envoy.node_id)] = stamp
        envoys = [resources_pb2.EnvoyStatus.FromString(base64.b64decode(status)) for status in statuses]
        return sorted(envoys, key=lambda envoy: envoy.node_id), int(version)

    async def version(self, gateway_id: str) -> int:
        read = self._shared.client.get(self._statuses(gateway_id)[1])
        return int(await self._shared.call("Envoys' status", read) or 0)

    def _copy_key(self, copy: str) -> str:
        return self._shared.key("copy", copy)

    def _changed(self, node_id: str, gateway_id: str) -> None:
        self._dirty.add((gateway_id, node_id))
        self._flush.set()

    def connected(self, node_id: str, gateway_id: str) -> None:
        self._nodes.setdefault(gateway_id, {})[node_id] = 0
        self._stamps.pop((gateway_id, node_id), None)  # a new connection
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
        check = self._all_acked(keys=[self._hash(gateway_id)], args=[revision, self._copy_key("")])
        return bool(await self._shared.call("Envoys' acknowledgements", check))

    async def run(self) -> None:
        """Writes what changed as it changes, and everything (and this copy's key) every second."""
        loop = asyncio.get_running_loop()
        rewrite_at = loop.time()
        while True:
            timeout = max(0.0, rewrite_at - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._flush.wait()
                await asyncio.sleep(FLUSH_SECONDS)
            self._flush.clear()
            everything = loop.time() >= rewrite_at
            dirty, self._dirty = self._dirty, set()
            try:
                await self._write(dirty, everything)
            except SharedStateUnavailable:
                self._dirty |= dirty  # and everything again in a second
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
                acked = self._nodes.get(gateway_id, {}).get(node_id)
                if acked is None:
                    key = self._hash(gateway_id)
                    await self._forget(keys=[key], args=[node_id, self._copy], client=pipeline)
                else:
                    pipeline.hset(self._hash(gateway_id), node_id, f"{self._copy} {acked}")
                    pipeline.pexpire(self._hash(gateway_id), HASH_TTL_MS)
            await self._shared.call("Envoys' acknowledgements", pipeline.execute())

    async def close(self) -> None:
        """A clean stop: this copy's nodes are not waited for from now on."""
        with contextlib.suppress(*RedisUnavailable):
            await self._shared.client.delete(self._copy_key(self._copy))

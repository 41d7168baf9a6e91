"""Request rates over every copy's Envoys: each copy appends its Envoys' pushes to one Redis stream
(ids on Redis's clock, entries older than the longest window trimmed), and the autoscaler, on the
copy that leads, reads what is new before each look. A rate is then the sum over all of a gateway's
Envoys whichever copy they push to."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from gateway_xds.autoscale.rates import KEEP_SECONDS, RequestRates
from gateway_xds.shared.redis import SharedRedis

READ_BATCH = 5_000

# KEYS: the stream; ARGV: node, its totals (JSON), how long entries are kept (ms).
_APPEND = """
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local keep = tonumber(ARGV[3])
redis.call('XADD', KEYS[1], 'MINID', '~', tostring(now_ms - keep), '*', 'node', ARGV[1], 'totals', ARGV[2])
redis.call('PEXPIRE', KEYS[1], keep)
return 1
"""


def _entry_seconds(entry_id: str) -> float:
    return int(entry_id.partition("-")[0]) / 1000


class RedisRates(RequestRates):
    def __init__(self, shared: SharedRedis) -> None:
        super().__init__()
        self._shared = shared
        self._stream = shared.key("demand")
        self._append = shared.client.register_script(_APPEND)
        self._last_id = "0"

    async def report(self, node: str, totals: Mapping[str, float]) -> None:
        if not totals:
            return
        arguments: list[str | int] = [node, json.dumps(dict(totals)), int(KEEP_SECONDS * 1000)]
        await self._shared.call("request counters", self._append(keys=[self._stream], args=arguments))

    async def refresh(self) -> None:
        """Records every push since the last refresh, at its time on this process's clock."""
        while True:
            pipeline = self._shared.client.pipeline(transaction=False)
            pipeline.time()
            pipeline.xread({self._stream: self._last_id}, count=READ_BATCH)
            (seconds, micros), streams = await self._shared.call("request counters", pipeline.execute())
            # How far this process's clock is ahead of Redis's (to within the round trip).
            offset = time.monotonic() - (seconds + micros / 1_000_000)
            entries = streams[0][1] if streams else []
            for entry_id, fields in entries:
                at = _entry_seconds(entry_id) + offset
                for service, total in json.loads(fields["totals"]).items():
                    self.record(fields["node"], service, at, float(total))
                self._last_id = entry_id
            if len(entries) < READ_BATCH:
                return

    def reset(self) -> None:
        self._series.clear()
        self._last_rate.clear()
        self._last_id = "0"

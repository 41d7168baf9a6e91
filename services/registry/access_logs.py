"""The services' recent requests, as gateway_xds passes them on, kept in memory: the newest
KEPT_PER_SERVICE of each service, of at most MAX_SERVICES services (the least recently logged go
first). Each entry gets a cursor, so a reader that follows asks only for what came after."""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable

from gatehouse.access_logs import KEPT_PER_SERVICE, is_error
from gatehouse.v1 import registry_pb2

MAX_SERVICES = 2_000
DEFAULT_TAIL, MAX_TAIL = 100, KEPT_PER_SERVICE


class AccessLogStore:
    def __init__(self) -> None:
        self._by_service: OrderedDict[str, deque[tuple[int, registry_pb2.AccessLogEntry]]] = OrderedDict()
        self._cursors = itertools.count(1)

    def add(self, service_id: str, entries: Iterable[registry_pb2.AccessLogEntry]) -> None:
        kept = self._by_service.get(service_id)
        if kept is None:
            kept = self._by_service[service_id] = deque(maxlen=KEPT_PER_SERVICE)
            while len(self._by_service) > MAX_SERVICES:
                self._by_service.popitem(last=False)
        self._by_service.move_to_end(service_id)
        for entry in entries:
            kept.append((next(self._cursors), entry))

    def forget(self, service_id: str) -> None:
        self._by_service.pop(service_id, None)

    def read(
        self, service_id: str, tail: int = 0, after: int = 0
    ) -> tuple[list[registry_pb2.AccessLogEntry], int]:
        """The last `tail` entries after cursor `after`, and the cursor to follow from."""
        kept = list(self._by_service.get(service_id, ()))
        newer = [(cursor, entry) for cursor, entry in kept if cursor > after]
        count = min(tail or DEFAULT_TAIL, MAX_TAIL)
        shown = newer[-count:]
        cursor = shown[-1][0] if shown else after
        return [entry for _, entry in shown], cursor


def line(entry: registry_pb2.AccessLogEntry) -> str:
    """`2026-12-07T16:45:49.123Z GET /path?q=REDACTED 200 12.3ms replica=… client=…`, and
    `sampled=2.5%` on a success logged while Envoy logged only that share of them."""
    moment = entry.time.ToDatetime().isoformat(timespec="milliseconds") + "Z"
    skipped = f"({entry.skipped} requests left out by sampling) " if entry.skipped else ""
    parts = [
        f"{skipped}{moment}",
        entry.method or "-",
        entry.path or "-",
        str(entry.status or "-"),
        f"{entry.duration_ms:.1f}ms",
        f"replica={entry.replica or '-'}",
        f"client={entry.client or '-'}",
    ]
    if entry.HasField("successes_logged_percent") and not is_error(entry.status):
        parts.append(f"sampled={entry.successes_logged_percent:.3g}%")
    return " ".join(parts)

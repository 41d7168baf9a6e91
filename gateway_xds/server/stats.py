"""Counters of the xDS server, per stream and in total, for tests, benchmarks and debugging."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

from gateway_xds.server.protocol import StreamCounters


@dataclass
class StreamInfo:
    stream_id: int
    protocol: str  # "sotw" or "delta"
    node_id: str
    gateway_id: str
    counters: StreamCounters
    open: bool = True


@dataclass
class ServerStats:
    streams: dict[int, StreamInfo] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def opened(self, protocol: str, node_id: str, gateway_id: str, counters: StreamCounters) -> StreamInfo:
        info = StreamInfo(next(self._ids), protocol, node_id, gateway_id, counters)
        self.streams[info.stream_id] = info
        return info

    def of_node(self, node_id: str) -> StreamCounters:
        """The node's counters summed over all its streams, open and closed."""
        return _sum(info.counters for info in self.streams.values() if info.node_id == node_id)

    def total(self) -> StreamCounters:
        return _sum(info.counters for info in self.streams.values())

    def open_streams(self) -> list[StreamInfo]:
        return [info for info in self.streams.values() if info.open]


def _sum(counters: Iterator[StreamCounters] | list[StreamCounters]) -> StreamCounters:
    total = StreamCounters()
    for one in counters:
        for f in fields(StreamCounters):
            setattr(total, f.name, getattr(total, f.name) + getattr(one, f.name))
    return total

"""Request rates per service from Envoys' cumulative counters, combined across gateway replicas.

Each Envoy reports its own counters; a rate is the counter's growth over a window. A replica that
stops reporting keeps its last rate for one window (a missed report is not zero traffic), then
drops out. A counter that goes down means that Envoy restarted: its history starts again."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

WINDOWS = (30, 60, 300)
KEEP_SECONDS = max(WINDOWS) + 30


@dataclass
class _Series:
    points: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, now: float, value: float) -> None:
        if self.points and value < self.points[-1][1]:
            self.points.clear()
        self.points.append((now, value))
        while self.points and now - self.points[0][0] > KEEP_SECONDS:
            self.points.popleft()

    def rate(self, now: float, window: float) -> float | None:
        """Growth per second over the last `window`; None without two points in it."""
        if not self.points or now - self.points[-1][0] > window:
            return None
        inside = [point for point in self.points if now - point[0] <= window]
        first, last = (inside[0], inside[-1]) if len(inside) > 1 else (None, None)
        if first is None or last is None or last[0] <= first[0]:
            return None
        return (last[1] - first[1]) / (last[0] - first[0])


class RequestRates:
    """The rates of the Envoys that report to this process. RedisRates (redis_rates.py) is the same
    over the reports of every copy's Envoys."""

    def __init__(self) -> None:
        # (service key, Envoy node id) → its counter history
        self._series: dict[tuple[str, str], _Series] = {}
        self._last_rate: dict[tuple[str, str], tuple[float, float]] = {}

    async def report(self, node: str, totals: Mapping[str, float]) -> None:
        """An Envoy's counters, per service, as it pushes them."""
        now = time.monotonic()
        for service, total in totals.items():
            self.record(node, service, now, total)

    async def refresh(self) -> None:
        """Takes in what was reported elsewhere since the last refresh (nothing here)."""

    def reset(self) -> None:
        """Reads what was reported elsewhere afresh from the start (nothing here: what this process
        records is all there is)."""

    def record(self, node: str, service: str, now: float, total: float) -> None:
        self._series.setdefault((service, node), _Series()).add(now, total)

    def rate(self, service: str, now: float, window: int) -> float:
        """Requests per second to `service` over `window`, summed over the gateway's Envoys."""
        total = 0.0
        for (key, node), series in self._series.items():
            if key != service:
                continue
            rate = series.rate(now, window)
            if rate is not None:
                self._last_rate[(key, node)] = (now, rate)
                total += rate
                continue
            remembered = self._last_rate.get((key, node))
            if remembered is not None and now - remembered[0] <= window:
                total += remembered[1]
        return total

    def forget_node(self, node: str) -> None:
        for key in [key for key in self._series if key[1] == node]:
            del self._series[key]

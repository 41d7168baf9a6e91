"""The share of its successful requests each Envoy logs, adapted to load: every request while an
Envoy sends fewer than `budget` entries a second, fewer successes above it (errors are always
logged), all of them again once load falls. The share reaches the Envoy as a runtime value over RTDS
(runtime_service.py) and is applied by its access log filter, so an entry left out costs neither
Envoy nor this process anything.

Every CONTROL_SECONDS the entries received from each Envoy are judged: above the budget, the share
falls so that successes take about half of it; below a quarter of the budget, it rises the same way
(at most to the configured share). In between nothing changes, so the share does not swing with
small changes in load; the window after a change is not judged (its entries were logged under the
old share, sent by Envoy once a second).

An Envoy's access log streams (one per worker) and its runtime stream may go to different copies of
gateway_xds: with Redis (shared_sampling.py) each copy passes on what it received from Envoys whose
runtime stream is elsewhere, and learns their share, so the copy that holds the runtime stream judges
all of the Envoy's entries and every copy marks the entries it passes on with the share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gatehouse import access_logs

CONTROL_SECONDS = 2.0
# The share never falls below this (percent): 1 in 10,000 successes.
MIN_PERCENT = 0.01
# Of the budget, successes get at least this part whatever the errors take.
MIN_SUCCESS_ROOM = 1 / 20
# A guard against node ids made up by callers: entries of more nodes than this in a window are not
# counted.
MAX_COUNTED_NODES = 100_000


@dataclass
class Counts:
    """Entries received from one Envoy since the last judgement."""

    successes: int = 0
    errors: int = 0


class SharedCounts(Protocol):
    async def exchange(
        self, counts: dict[str, Counts], held: Mapping[str, float]
    ) -> tuple[dict[str, Counts], dict[str, float]]:
        """Pass on the counts of Envoys whose runtime stream is not here, publish the shares of those
        whose stream is (`held`); what every copy counted of the held ones, and the shares other
        copies publish of the rest."""
        ...


@dataclass
class _Envoy:
    percent: float
    streams: int = 0
    settling: bool = False


def _rounded(percent: float) -> float:
    """To the runtime value's resolution (1 in SHARE_DENOMINATOR)."""
    return access_logs.share_numerator(percent) * 100 / access_logs.SHARE_DENOMINATOR


class LogSampling:
    def __init__(
        self,
        budget: float,
        cap: float = 100.0,
        interval: float = CONTROL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedCounts | None = None,
    ) -> None:
        self.budget = budget
        self.cap = cap
        self._interval = interval
        self._clock = clock
        self._shared = shared
        # node id -> its share; only Envoys whose runtime stream is open here (only those can be told).
        self._envoys: dict[str, _Envoy] = {}
        # node id -> what it sent since the last judgement, whichever copy holds its runtime stream.
        self._counts: dict[str, Counts] = {}
        # node id -> its share, as the copy that holds its runtime stream published it.
        self._elsewhere: dict[str, float] = {}
        self._changed = asyncio.Event()

    @property
    def changed(self) -> asyncio.Event:
        """Set once any Envoy's share changes (take it before reading the share, then wait on it)."""
        return self._changed

    def attach(self, node: str) -> None:
        """A runtime stream of `node` opened."""
        envoy = self._envoys.setdefault(node, _Envoy(self.cap))
        envoy.streams += 1

    def detach(self, node: str) -> None:
        envoy = self._envoys.get(node)
        if envoy is None:
            return
        envoy.streams -= 1
        if envoy.streams <= 0:
            del self._envoys[node]

    def percent(self, node: str) -> float | None:
        """The share of successes `node` logs; None when its runtime stream is not open here."""
        envoy = self._envoys.get(node)
        return None if envoy is None else envoy.percent

    def shares(self) -> dict[str, float]:
        """node id -> share, of the Envoys whose runtime stream is open here."""
        return {node: envoy.percent for node, envoy in self._envoys.items()}

    def received(self, node: str, status: int) -> float | None:
        """Count an entry from `node`; the share it was logged under (None: not known)."""
        counts = self._counts.get(node)
        if counts is None and len(self._counts) < MAX_COUNTED_NODES:
            counts = self._counts[node] = Counts()
        if counts is not None:
            if access_logs.is_error(status):
                counts.errors += 1
            else:
                counts.successes += 1
        envoy = self._envoys.get(node)
        return self._elsewhere.get(node) if envoy is None else envoy.percent

    def judge(self, seconds: float, counts: Mapping[str, Counts] | None = None) -> list[str]:
        """Adapt every share to what its Envoy sent in the last `seconds` (`counts`, by default what
        this copy received); the nodes whose share changed."""
        if counts is None:
            counts, self._counts = self._counts, {}
        changed = []
        for node, envoy in self._envoys.items():
            sent = counts.get(node, Counts())
            successes, errors = sent.successes / seconds, sent.errors / seconds
            if envoy.settling:
                envoy.settling = False
                continue
            received = successes + errors
            over, under = received > self.budget, received < self.budget / 4
            if not (over or under):
                continue
            target = self.cap
            offered = successes * 100 / envoy.percent
            if offered > 0:
                room = max(self.budget / 2 - errors, self.budget * MIN_SUCCESS_ROOM)
                target = _rounded(min(self.cap, max(MIN_PERCENT, 100 * room / offered)))
            if (over and target < envoy.percent) or (under and target > envoy.percent):
                envoy.percent = target
                envoy.settling = True
                changed.append(node)
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()
        return changed

    async def step(self, seconds: float) -> list[str]:
        """One judgement of what was received in the last `seconds`, with the other copies' counts."""
        counts, self._counts = self._counts, {}
        if self._shared is not None:
            for node in self._elsewhere:  # their shares are read again, until no copy publishes them
                counts.setdefault(node, Counts())
            counts, self._elsewhere = await self._shared.exchange(counts, self.shares())
        return self.judge(seconds, counts)

    async def run(self) -> None:
        last = self._clock()
        while True:
            await asyncio.sleep(self._interval)
            now = self._clock()
            await self.step(max(now - last, 1e-3))
            last = now


def sampling_from_env(shared: SharedCounts | None = None) -> LogSampling:
    return LogSampling(access_logs.configured_budget(), cap=access_logs.configured_percent(), shared=shared)

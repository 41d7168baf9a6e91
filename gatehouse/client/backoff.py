"""Delays between attempts to reach a server: growing, bounded, jittered, and started over once an
attempt went well."""

from __future__ import annotations

import random
from collections.abc import Callable

# The share of each delay drawn at random, so that clients that lost the server together do not come
# back in step.
JITTER = 0.5


class Backoff:
    def __init__(
        self,
        initial: float,
        maximum: float,
        factor: float = 2.0,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        """`uniform`: numbers in [0, 1) (tests pass their own)."""
        self._initial = initial
        self._maximum = maximum
        self._factor = factor
        self._uniform = uniform
        self._ceiling = initial

    def next_delay(self) -> float:
        """The wait before the next attempt: up to `initial`, then `factor` times more each time, never
        above `maximum`, and never less than half of that."""
        delay = self._ceiling * (1.0 - JITTER * self._uniform())
        self._ceiling = min(self._maximum, self._ceiling * self._factor)
        return delay

    def reset(self) -> None:
        """After a healthy session: the next failure is retried promptly again."""
        self._ceiling = self._initial

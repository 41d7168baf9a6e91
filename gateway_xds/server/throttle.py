"""When a stream pushes a new snapshot: at once after a quiet period, otherwise batched.

A token bucket per stream: `burst` pushes may go out back to back (a lone change, or the two writes
of a new service and its replica, go out at once: leading edge), then one more per `window`.
Changes that arrive while no token is left, or while the node has not answered the last push, wait
and go out together as the latest snapshot. So 1,000 changes a second cost each Envoy about
1/window pushes a second (10 with the default), and no push ever queues behind an unanswered one.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WINDOW_SECONDS = 0.1
DEFAULT_BURST = 3
# A node that leaves a push unanswered this long gets the next one anyway.
DEFAULT_MAX_UNANSWERED_SECONDS = 2.0


@dataclass
class PushThrottle:
    window: float = DEFAULT_WINDOW_SECONDS
    burst: int = DEFAULT_BURST
    max_unanswered: float = DEFAULT_MAX_UNANSWERED_SECONDS
    changed: bool = False
    last_push: float | None = None
    _tokens: float = float(DEFAULT_BURST)
    _refilled_at: float | None = None

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)

    def note_change(self) -> None:
        self.changed = True

    def delay(self, now: float, in_flight: bool) -> float | None:
        """None: nothing to push; 0: push now; else look again after that many seconds (sooner if
        the node answers)."""
        if not self.changed:
            return None
        if in_flight and self.last_push is not None:
            return max(self.last_push + self.max_unanswered - now, 0.0)
        tokens = self._refill(now)
        if tokens >= 1.0 - 1e-9:
            return 0.0
        return (1.0 - tokens) * self.window

    def pushed(self, now: float, sent_anything: bool) -> None:
        self.changed = False
        if sent_anything:
            self._tokens = self._refill(now) - 1.0
            self._refilled_at = now
            self.last_push = now

    def _refill(self, now: float) -> float:
        if self._refilled_at is None:
            return self._tokens
        return min(float(self.burst), self._tokens + (now - self._refilled_at) / self.window)

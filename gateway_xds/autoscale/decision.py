"""How many replicas a service should have: ceil(load / target), the load being requests per second
or requests in flight (`metric: rps | concurrency`), clamped to its range, changed only
after the load has stayed above (or below) for the scale-up (or scale-down) delay. Requests to a
service with no replicas bring one up at once."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalingPolicy:
    minimum: int
    maximum: int
    # Per replica: requests per second, or requests in flight.
    target: float
    scale_up_delay: float
    scale_down_delay: float


@dataclass
class ScalingState:
    """What the autoscaler remembers of one service between looks."""

    current: int
    wants_more_since: float | None = None
    wants_fewer_since: float | None = None
    # Woken by requests before any stats showed them: no scaling down before this.
    awake_until: float = 0.0


def wanted(policy: ScalingPolicy, load: float) -> int:
    # A hair under a whole number of replicas' worth (2.0000001 in flight) is that number.
    raw = math.ceil(load / policy.target - 1e-6) if load > 0 else 0
    return max(policy.minimum, min(policy.maximum, raw))


def decide(policy: ScalingPolicy, state: ScalingState, rps: float, now: float) -> int:
    """The replica count to run now; updates `state`'s timers."""
    target = wanted(policy, rps)
    if target > state.current:
        state.wants_fewer_since = None
        if state.current == 0 and rps > 0:
            state.wants_more_since = None
            state.current = max(1, min(target, policy.maximum))
            return state.current
        if state.wants_more_since is None:
            state.wants_more_since = now
        if now - state.wants_more_since >= policy.scale_up_delay:
            state.current, state.wants_more_since = target, None
    elif target < state.current and now >= state.awake_until:
        state.wants_more_since = None
        if state.wants_fewer_since is None:
            state.wants_fewer_since = now
        if now - state.wants_fewer_since >= policy.scale_down_delay:
            state.current, state.wants_fewer_since = target, None
    else:
        state.wants_more_since = state.wants_fewer_since = None
    return state.current


def wake(state: ScalingState, now: float, window: float) -> int:
    """Requests are waiting for a service with no replica: one at once, kept for at least one window
    (until the rate over the window sees those requests)."""
    state.current = max(state.current, 1)
    state.wants_more_since = state.wants_fewer_since = None
    state.awake_until = now + window
    return state.current

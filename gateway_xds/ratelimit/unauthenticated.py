"""Requests that fail auth, counted apart from everyone's allowance.

They never reach the rate limit filters, which come after the auth check and count authenticated
principals only (translate/http_filters.py). Under a rate-limited prefix the check itself limits
them: a bucket per client address at the prefix's rate and burst, shared by the gateway's Envoys,
and 429 instead of 401 beyond it. By address, never by a header: an anonymous client picks its
headers but not its address."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from gateway_xds.ratelimit.buckets import SharedBuckets
from gateway_xds.ratelimit.rules import read_rule


class UnauthenticatedLimits:
    def __init__(
        self, buckets: SharedBuckets | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._buckets = buckets if buckets is not None else SharedBuckets()
        self._clock = clock

    def wait(self, gateway: str, context: Mapping[str, str], address: str) -> float:
        """Spend a token of the address's bucket under the check's rule: 0 if there was one (or the
        check carries no rule), else the seconds until there is."""
        rule = read_rule(context)
        if rule is None:
            return 0.0
        key = (gateway, rule.name, f"unauthenticated={address}")
        return self._buckets.take(key, rule.requests_per_second, rule.burst, 1, self._clock())

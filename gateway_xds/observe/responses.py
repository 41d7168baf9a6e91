"""Requests the control plane itself answered 401 or 429 for a service (the auth check, the shared
rate limits), which Envoy's cluster stats never see: they never reach the service's cluster."""

from __future__ import annotations

from collections import Counter

# A guard against keys an Envoy makes up (they come from its requests' check context).
MAX_KEYS = 100_000


class AnsweredRequests:
    def __init__(self) -> None:
        # service id -> count
        self.unauthorized: Counter[str] = Counter()
        self.unauthenticated_limited: Counter[str] = Counter()
        # backend name (svc_<project>_<service>) -> count
        self.rate_limited: Counter[str] = Counter()

    @staticmethod
    def _add(counts: Counter[str], key: str) -> None:
        if key and (key in counts or len(counts) < MAX_KEYS):
            counts[key] += 1

    def refused(self, service_id: str) -> None:
        self._add(self.unauthorized, service_id)

    def limited_unauthenticated(self, service_id: str) -> None:
        self._add(self.unauthenticated_limited, service_id)

    def limited(self, backend: str) -> None:
        self._add(self.rate_limited, backend)

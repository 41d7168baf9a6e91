"""Requests a gateway's Envoys answered 401 or 429 for a service without reaching it (the credential
check, rate limits, failed-attempt limits), which the service's cluster stats never see. They are
counted from the access log entries Envoy streams (each names its service's backend), before this
process samples them. Envoy samples only successes and logs every error, so each is counted; with
`GATEHOUSE_ACCESS_LOG_PERCENT=0` there is no access log and nothing is counted."""

from __future__ import annotations

from collections import Counter

# A guard against keys an Envoy makes up (route names of its own).
MAX_KEYS = 100_000
UNAUTHORIZED = 401
TOO_MANY_REQUESTS = 429


class AnsweredRequests:
    def __init__(self) -> None:
        # backend name (svc_<project>_<service>) -> requests
        self.unauthorized: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()

    def logged(self, backend: str, status: int) -> None:
        counts = {UNAUTHORIZED: self.unauthorized, TOO_MANY_REQUESTS: self.rate_limited}.get(status)
        if counts is not None and backend and (backend in counts or len(counts) < MAX_KEYS):
            counts[backend] += 1

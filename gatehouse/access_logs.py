"""Access logs, the contract between the gateways' Envoys, gateway_xds and the registry: what Envoy
streams (gRPC ALS), under which log name, and what of a request is ever kept.

Only method, path, status, latency, replica and client address are kept: no header is logged (so
never `Authorization`), and a query string keeps its parameter names with every value replaced by
REDACTED (tokens travel in queries too)."""

from __future__ import annotations

import functools
import os
from urllib.parse import parse_qsl, quote

LOG_NAME = "gatehouse"
REDACTED = "REDACTED"
# Envoy sends a batch at least this often, or once it holds this many bytes.
FLUSH_INTERVAL_MS = 1000
BUFFER_BYTES = 16 << 10
# Kept per service (the newest); gateway_xds keeps at most SAMPLED_PER_SECOND entries a second per
# service and counts the rest.
KEPT_PER_SERVICE = 1000
SAMPLED_PER_SECOND = 50
MAX_PATH_CHARS = 512
# Of each gateway's successful requests, the most its Envoys log (0 to 100; 0: no access log at all).
# Errors (status >= 400, or a response flag such as an upstream failure) are always logged.
PERCENT_ENV = "GATEHOUSE_ACCESS_LOG_PERCENT"
# Logging every request costs the data plane (bench/RESULTS.md), so under load the share of
# successes an Envoy logs falls until gateway_xds receives about this many entries a second from it
# (and rises again, up to the share above, when load falls). Sampling happens in Envoy, before any
# entry is made: gateway_xds sets the share per Envoy over RTDS, as a runtime value of the layer below.
BUDGET_ENV = "GATEHOUSE_ACCESS_LOG_BUDGET"
DEFAULT_BUDGET = 200
RUNTIME_LAYER = "gatehouse"
SUCCESS_SHARE_KEY = "gatehouse.access_log.success_share"
# No runtime layer sets it; Envoy's status code filter takes a runtime key.
ERROR_STATUS_KEY = "gatehouse.access_log.error_status"
FIRST_ERROR_STATUS = 400
# The share is a fraction of this many (Envoy's FractionalPercent MILLION), so it can fall below 1%.
SHARE_DENOMINATOR = 1_000_000


def _whole_number(name: str, default: int, lowest: int, highest: int, meaning: str) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        number = int(raw)
    except ValueError:
        number = lowest - 1
    if not lowest <= number <= highest:
        raise SystemExit(f"error: {name}={raw!r} is not a whole number {meaning}")
    return number


@functools.cache
def configured_percent() -> int:
    return _whole_number(PERCENT_ENV, 100, 0, 100, "from 0 to 100")


@functools.cache
def configured_budget() -> int:
    return _whole_number(BUDGET_ENV, DEFAULT_BUDGET, 1, 10**9, "of entries a second from 1 up")


def is_error(status: int) -> bool:
    """Whether Envoy logs a response whatever the sampling: an error, or none at all (status 0: the
    connection ended first)."""
    return status >= FIRST_ERROR_STATUS or status == 0


def share_numerator(percent: float) -> int:
    return round(percent * SHARE_DENOMINATOR / 100)


def redacted_path(path: str) -> str:
    """`/a?token=s3cret&x=1` -> `/a?token=REDACTED&x=REDACTED`; the path itself as sent, cut to
    MAX_PATH_CHARS."""
    base, question, query = path.partition("?")
    base = base[:MAX_PATH_CHARS]
    if not question:
        return base
    names = [quote(name, safe="") for name, _ in parse_qsl(query, keep_blank_values=True)]
    if not names:
        return f"{base}?{REDACTED}" if query else base
    return (base + "?" + "&".join(f"{name}={REDACTED}" for name in names))[: MAX_PATH_CHARS * 2]

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
# Of each gateway's requests, the share its Envoys log (0 to 100; 0: none). Logging every request
# costs the data plane (bench/RESULTS.md); a lower share samples in Envoy, before any work is done.
PERCENT_ENV = "GATEHOUSE_ACCESS_LOG_PERCENT"


@functools.cache
def configured_percent() -> int:
    raw = os.environ.get(PERCENT_ENV, "")
    if not raw:
        return 100
    try:
        percent = int(raw)
    except ValueError:
        percent = -1
    if not 0 <= percent <= 100:
        raise SystemExit(f"error: {PERCENT_ENV}={raw!r} is not a whole number from 0 to 100")
    return percent


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

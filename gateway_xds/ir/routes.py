"""Virtual hosts: which requests go to which backend, and how (timeouts, body limit, retries, policies)."""

from dataclasses import dataclass

from gateway_xds.ir.policies import Authorization, RateLimit, ScaleFromZero
from gateway_xds.ir.tls import AcmeChallenge

# Generous enough for streaming (SSE, long generations, WebSockets): a stream is cut only after
# this long without a byte either way; there is no total request deadline unless one is set.
DEFAULT_IDLE_TIMEOUT_MS = 3_600_000
DEFAULT_REQUEST_TIMEOUT_MS = 0  # 0: none
DEFAULT_MAX_REQUEST_BODY_BYTES = 64 << 20
DEFAULT_CONNECT_RETRIES = 2


@dataclass(frozen=True)
class Canary:
    """A new version beside the stable one: `weight` percent of requests (0-100), and every request
    carrying `header` (when set), go to `backend`."""

    backend: str
    weight: int
    header: str = ""


@dataclass(frozen=True)
class VirtualHost:
    """Requests whose Host matches one of `domains` go to the backend named `backend`.

    The timeouts and the body limit are per service; the registry has no field for them yet, so the
    provider fills in the defaults.
    """

    name: str
    domains: tuple[str, ...]
    backend: str
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    # Requests announcing a larger Content-Length get 413; 0: no limit.
    max_request_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_BYTES
    # Retries of requests that never reached a replica (connect failure, refused stream).
    connect_retries: int = DEFAULT_CONNECT_RETRIES
    # Plain-HTTP requests are redirected to HTTPS (only once the gateway serves a certificate), on this
    # port; ACME challenge paths never are.
    https_redirect: bool = False
    https_port: int = 443
    # HTTP-01 answers for this host, given before anything else (no auth, no redirect).
    acme_challenges: tuple[AcmeChallenge, ...] = ()
    # None: anyone may call; otherwise Envoy checks each request against its credentials.
    authorization: Authorization | None = None
    rate_limits: tuple[RateLimit, ...] = ()
    # Browsers may call it from any origin; preflight requests are answered without auth.
    cors: bool = False
    # Set while the backend has no endpoint and the service may scale from zero.
    scale_from_zero: ScaleFromZero | None = None
    # A rollout's canary: part of the requests go to its backend instead.
    canary: Canary | None = None

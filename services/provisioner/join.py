"""Join tokens: how a gateway host (cloud VM or Kubernetes pod) gets its xDS client certificate
without a long-lived key in its instance metadata, and renews it.

The provisioner issues one single-use, expiring token per host and puts it in the host's startup
data (or its pod's Secret); at first boot the host makes its own key and POSTs a certificate request
with the token to `/v1/join` over HTTPS (the internal CA's server certificate), and gets back a
client certificate naming its gateway. Before that certificate ends, the host POSTs a request for a
new key to `/v1/renew`, presenting the current certificate (mTLS) as its proof. Tokens are signed,
not stored; a used one's SHA-256 is kept by the registry until it expires. The host's side is
`hosts/identity.py`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from gatehouse.client.connection import Stubs
from gatehouse.gateway_identity import gateway_of_uri
from gatehouse.v1 import registry_pb2
from services.common.internal_ca import InternalCA
from services.provisioner.hosts.identity import JOIN_PATH, RENEW_PATH, JoinEndpoint

log = logging.getLogger(__name__)

TOKEN_LIFETIME = datetime.timedelta(hours=2)
TOKEN_PREFIX = "gj1."
# What the tokens' HMAC key is derived for, from the internal CA's key.
JOIN_TOKEN_KEY = "join-tokens"
MAC_BYTES = 16
# Certificate requests are a few hundred bytes.
MAX_REQUEST_BYTES = 16 << 10


class JoinRefusedError(Exception):
    """The token is unknown, already used or expired."""


@dataclass(frozen=True)
class JoinClaim:
    gateway_id: str
    host_index: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Redemptions(Protocol):
    """Which join tokens were used, shared by every copy of the provisioner."""

    def used(self, digest: str) -> bool:
        """Called from backends' worker threads."""
        ...

    async def use(self, digest: str, expires_at: float) -> bool:
        """Marks the token used; whether it had been used before."""
        ...


class RegistryRedemptions:
    """Kept by the registry: a host may join at any copy of the provisioner."""

    def __init__(self, stubs: Stubs) -> None:
        self._stubs = stubs
        self._loop = asyncio.get_running_loop()

    def used(self, digest: str) -> bool:
        """Blocks: backends call it from their worker threads, never on the event loop."""
        request = registry_pb2.RedeemJoinTokenRequest(digest=digest, check_only=True)
        call = self._stubs.control_plane.RedeemJoinToken(request, timeout=10)
        answer = asyncio.run_coroutine_threadsafe(_awaited(call), self._loop).result(timeout=15)
        return answer.used_before

    async def use(self, digest: str, expires_at: float) -> bool:
        request = registry_pb2.RedeemJoinTokenRequest(digest=digest, expires_at=expires_at)
        answer = await self._stubs.control_plane.RedeemJoinToken(request, timeout=10)
        return answer.used_before


async def _awaited(
    call: Awaitable[registry_pb2.RedeemJoinTokenResponse],
) -> registry_pb2.RedeemJoinTokenResponse:
    return await call


class JoinTokens:
    """Signed, not stored: a token says which host of which gateway it is for and until when, under
    an HMAC keyed from the internal CA's key (every copy of the provisioner derives the same key);
    only its use is recorded (`redemptions`), until it expires."""

    def __init__(
        self,
        key: bytes,
        redemptions: Redemptions,
        lifetime: datetime.timedelta = TOKEN_LIFETIME,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._key = key
        self._redemptions = redemptions
        self._lifetime = lifetime
        self._clock = clock

    def issue(self, gateway_id: str, host_index: int) -> str:
        expires = int((self._clock() + self._lifetime).timestamp())
        claim = {"g": gateway_id, "h": host_index, "e": expires, "n": secrets.token_urlsafe(9)}
        payload = _b64(json.dumps(claim, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{payload}.{_b64(self._mac(payload))}"

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:MAC_BYTES]

    def _verified(self, token: str) -> tuple[JoinClaim, float] | None:
        """The claim and expiry of a token this provisioner signed and that has not expired."""
        payload, _, mac = token.removeprefix(TOKEN_PREFIX).partition(".")
        if not token.startswith(TOKEN_PREFIX) or not hmac.compare_digest(_b64(self._mac(payload)), mac):
            return None
        try:
            claim = json.loads(_unb64(payload))
            found = JoinClaim(gateway_id=str(claim["g"]), host_index=int(claim["h"]))
            expires = float(claim["e"])
        except (ValueError, KeyError, TypeError):
            return None
        return (found, expires) if expires > self._clock().timestamp() else None

    def is_live(self, token: str) -> bool:
        """Whether the token can still be redeemed (not used, not expired)."""
        return self._verified(token) is not None and not self._redemptions.used(_digest(token))

    async def redeem(self, token: str) -> JoinClaim:
        """The host the token was issued for; the token cannot be used again, at any copy."""
        verified = self._verified(token)
        if verified is None or await self._redemptions.use(_digest(token), verified[1]):
            raise JoinRefusedError("the join token is unknown, used or expired")
        return verified[0]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class JoinSetup:
    """What cloud backends give their hosts: a token per host, and where to exchange it."""

    tokens: JoinTokens
    endpoint: JoinEndpoint


def server_ssl_context(ca: InternalCA, hosts: list[str]) -> ssl.SSLContext:
    """TLS with the internal CA's server certificate (hosts trust the CA, which is public).

    A client certificate is asked for but optional: joining hosts have none yet (their token is the
    proof), renewing hosts present theirs, verified against the CA.
    """
    issued = ca.server_certificate(hosts)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # ssl loads keys from files only: the key lives in a private temporary file for the call.
    with tempfile.TemporaryDirectory() as directory:
        certificate_file, key_file = Path(directory) / "server.pem", Path(directory) / "server.key"
        certificate_file.write_bytes(issued.certificate_pem)
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(issued.key_pem)
        context.load_cert_chain(certificate_file, key_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=ca.certificate_pem.decode())
    return context


def _peer_gateway(request: web.Request) -> str | None:
    """The gateway named by the verified client certificate, if the client presented one."""
    transport = request.transport
    peer: dict[str, Any] | None = transport.get_extra_info("peercert") if transport else None
    for kind, value in (peer or {}).get("subjectAltName", ()):
        if kind == "URI" and (gateway_id := gateway_of_uri(value)) is not None:
            return gateway_id
    return None


def _sign(ca: InternalCA, csr: bytes, gateway_id: str) -> web.Response:
    try:
        certificate = ca.sign_request(csr, gateway_id)
    except ValueError as error:
        raise web.HTTPBadRequest(text=f"not a certificate request: {error}\n") from None
    return web.Response(body=certificate, content_type="application/x-pem-file")


def join_application(
    ca: InternalCA, tokens: JoinTokens, renewable: Callable[[str], bool] | None = None
) -> web.Application:
    """`renewable(gateway_id)`: whether the gateway still exists (None: every gateway of the CA)."""

    async def join(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise web.HTTPUnauthorized(text="a join token is required (Authorization: Bearer <token>)\n")
        csr = await request.read()
        try:
            claim = await tokens.redeem(token.strip())
        except JoinRefusedError as error:
            raise web.HTTPUnauthorized(text=f"{error}\n") from None
        log.info("gateway %s host %d joined", claim.gateway_id, claim.host_index)
        return _sign(ca, csr, claim.gateway_id)

    async def renew(request: web.Request) -> web.Response:
        gateway_id = _peer_gateway(request)
        if gateway_id is None:
            raise web.HTTPUnauthorized(text="renewing needs the current client certificate of a gateway\n")
        if renewable is not None and not renewable(gateway_id):
            raise web.HTTPForbidden(text=f"gateway {gateway_id} does not exist\n")
        return _sign(ca, await request.read(), gateway_id)

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_post(JOIN_PATH, join)
    app.router.add_post(RENEW_PATH, renew)
    return app


class JoinServer:
    """The HTTPS endpoint hosts exchange their join token at, and renew their certificate at."""

    def __init__(
        self,
        ca: InternalCA,
        tokens: JoinTokens,
        hosts: list[str],
        renewable: Callable[[str], bool] | None = None,
    ) -> None:
        """`renewable` may be set later (the provisioner that knows the gateways is built after)."""
        self.renewable = renewable
        app = join_application(ca, tokens, lambda gateway_id: self._renewable(gateway_id))
        self._runner = web.AppRunner(app, access_log=None)
        self._ssl = server_ssl_context(ca, hosts)
        self.port = 0

    def _renewable(self, gateway_id: str) -> bool:
        return self.renewable is None or self.renewable(gateway_id)

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl, reuse_port=False)
        try:
            await site.start()
        except OSError as error:
            await self._runner.cleanup()
            raise SystemExit(
                f"error: cannot listen for joining gateway hosts on {host}:{port}: {error.strerror} "
                "(set GATEHOUSE_JOIN_PORT)"
            ) from None
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()

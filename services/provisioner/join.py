"""Join tokens: how a cloud gateway host gets its xDS client certificate without a long-lived key in
its instance metadata.

The provisioner issues one single-use, expiring token per host and puts it in the host's startup
data; at first boot the host makes its own key and POSTs a certificate request with the token to
`/v1/join` over HTTPS (the internal CA's server certificate), and gets back a client certificate
naming its gateway. Only the tokens' SHA-256 is stored.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from services.common.internal_ca import InternalCA
from services.provisioner.hosts.startup import JoinEndpoint

JOIN_PATH = "/v1/join"
TOKEN_LIFETIME = datetime.timedelta(hours=2)
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


class JoinTokens:
    """Kept in a file readable by its owner only: token hash → the host it is for and its expiry."""

    def __init__(
        self,
        path: Path,
        lifetime: datetime.timedelta = TOKEN_LIFETIME,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self._path = path
        self._lifetime = lifetime
        self._clock = clock

    def issue(self, gateway_id: str, host_index: int) -> str:
        token = secrets.token_urlsafe(32)
        entries = self._live_entries()
        expires = self._clock() + self._lifetime
        entries[_digest(token)] = {"gateway": gateway_id, "host": host_index, "expires": expires.isoformat()}
        self._save(entries)
        return token

    def redeem(self, token: str) -> JoinClaim:
        """The host the token was issued for; the token cannot be used again."""
        entries = self._live_entries()
        entry = entries.pop(_digest(token), None)
        self._save(entries)
        if entry is None:
            raise JoinRefusedError("the join token is unknown, used or expired")
        return JoinClaim(gateway_id=str(entry["gateway"]), host_index=int(entry["host"]))

    def _live_entries(self) -> dict[str, dict[str, object]]:
        try:
            entries: dict[str, dict[str, object]] = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        now = self._clock()
        return {
            digest: entry
            for digest, entry in entries.items()
            if datetime.datetime.fromisoformat(str(entry["expires"])) > now
        }

    def _save(self, entries: dict[str, dict[str, object]]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = self._path.with_suffix(".tmp")
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(entries, handle)
        staging.replace(self._path)


@dataclass(frozen=True)
class JoinSetup:
    """What cloud backends give their hosts: a token per host, and where to exchange it."""

    tokens: JoinTokens
    endpoint: JoinEndpoint


def server_ssl_context(ca: InternalCA, hosts: list[str]) -> ssl.SSLContext:
    """TLS with the internal CA's server certificate (hosts trust the CA, which is public)."""
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
    return context


def join_application(ca: InternalCA, tokens: JoinTokens) -> web.Application:
    async def join(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise web.HTTPUnauthorized(text="a join token is required (Authorization: Bearer <token>)\n")
        csr = await request.read()
        try:
            claim = tokens.redeem(token.strip())
        except JoinRefusedError as error:
            raise web.HTTPUnauthorized(text=f"{error}\n") from None
        try:
            certificate = ca.sign_request(csr, claim.gateway_id)
        except ValueError as error:
            raise web.HTTPBadRequest(text=f"not a certificate request: {error}\n") from None
        return web.Response(body=certificate, content_type="application/x-pem-file")

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_post(JOIN_PATH, join)
    return app


class JoinServer:
    """The HTTPS endpoint hosts exchange their join token at."""

    def __init__(self, ca: InternalCA, tokens: JoinTokens, hosts: list[str]) -> None:
        self._runner = web.AppRunner(join_application(ca, tokens), access_log=None)
        self._ssl = server_ssl_context(ca, hosts)
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl, reuse_port=False)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()

"""Join tokens: the startup script's exchange step, run with real openssl and curl against the join
endpoint, gets a client certificate naming the gateway; a token works once and not after it expires."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from services.common.internal_ca import InternalCA, gateway_uri
from services.provisioner.hosts.startup import (
    CA_PATH,
    CLIENT_CERTIFICATE_PATH,
    CLIENT_KEY_PATH,
    JOIN_TOKEN_PATH,
    exchange_join_token,
)
from services.provisioner.join import JOIN_PATH, JoinRefusedError, JoinServer, JoinTokens
from tests.support.real import require_real


@pytest.fixture(scope="module")
def ca() -> InternalCA:
    return InternalCA.create()


@pytest.fixture
def tokens(tmp_path: Path) -> JoinTokens:
    return JoinTokens(tmp_path / "join-tokens.json")


@pytest.fixture
async def join_url(ca: InternalCA, tokens: JoinTokens) -> AsyncIterator[str]:
    server = JoinServer(ca, tokens, ["127.0.0.1"])
    await server.start("127.0.0.1", 0)
    yield f"https://127.0.0.1:{server.port}{JOIN_PATH}"
    await server.stop()


async def run_exchange(root: Path, token: str, ca: InternalCA, join_url: str) -> tuple[int, str]:
    """The script's exchange step as a host runs it, under `root`."""
    for tool in ("openssl", "curl"):
        if shutil.which(tool) is None:
            require_real(f"no {tool}")
    (root / CA_PATH.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / CA_PATH.lstrip("/")).write_bytes(ca.certificate_pem)
    (root / JOIN_TOKEN_PATH.lstrip("/")).write_text(token)
    script = "set -euo pipefail\n" + exchange_join_token(join_url)
    # The join endpoint runs on this loop: the script must not block it.
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, env={"root": str(root), "PATH": "/usr/bin:/bin"}, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    return await process.wait(), stderr.decode()


def in_root(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


async def test_the_exchange_gets_a_certificate_naming_the_gateway(
    tmp_path: Path, ca: InternalCA, tokens: JoinTokens, join_url: str
) -> None:
    code, stderr = await run_exchange(tmp_path, tokens.issue("gw-join", 0), ca, join_url)
    assert code == 0, stderr
    certificate = x509.load_pem_x509_certificate(in_root(tmp_path, CLIENT_CERTIFICATE_PATH).read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(name.value) for name in names] == [gateway_uri("gw-join")]
    assert stat.S_IMODE(in_root(tmp_path, CLIENT_KEY_PATH).stat().st_mode) == 0o600
    assert not in_root(tmp_path, JOIN_TOKEN_PATH).exists()


async def test_a_token_works_once(tmp_path: Path, ca: InternalCA, tokens: JoinTokens, join_url: str) -> None:
    token = tokens.issue("gw-join", 0)
    assert (await run_exchange(tmp_path / "first", token, ca, join_url))[0] == 0
    code, stderr = await run_exchange(tmp_path / "second", token, ca, join_url)
    assert code != 0 and "401" in stderr
    assert not in_root(tmp_path / "second", CLIENT_CERTIFICATE_PATH).exists()


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    clock = [now]
    tokens = JoinTokens(tmp_path / "join-tokens.json", datetime.timedelta(hours=1), lambda: clock[0])
    token = tokens.issue("gw-join", 0)
    clock[0] = now + datetime.timedelta(hours=2)
    with pytest.raises(JoinRefusedError):
        tokens.redeem(token)


def test_only_the_tokens_hash_is_stored(tmp_path: Path) -> None:
    tokens = JoinTokens(tmp_path / "join-tokens.json")
    token = tokens.issue("gw-join", 3)
    stored = (tmp_path / "join-tokens.json").read_text()
    assert token not in stored
    assert stat.S_IMODE((tmp_path / "join-tokens.json").stat().st_mode) == 0o600
    claim = tokens.redeem(token)
    assert (claim.gateway_id, claim.host_index) == ("gw-join", 3)

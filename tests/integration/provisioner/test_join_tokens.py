"""Join tokens and renewal: the host's join.sh, run with real openssl against the real join endpoint,
gets a client certificate naming the gateway; a token works once and not after it expires; a valid
certificate renews itself (mTLS) once two thirds of its lifetime have passed, and nothing else can
renew."""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from gatehouse.gateway_identity import gateway_uri
from services.common.internal_ca import InternalCA
from services.provisioner.hosts.identity import (
    IDENTITY_PATH,
    JOIN_TOKEN_PATH,
    JoinEndpoint,
    host_files,
    join_command,
)
from services.provisioner.join import JoinRefusedError, JoinServer, JoinTokens
from tests.integration.provisioner.hostsim import certificate_of, in_root, run_on_host
from tests.support.join_tokens import local_join_tokens
from tests.support.real import require_real

pytestmark = pytest.mark.real

GATEWAY_ID = "gw-join"


@pytest.fixture(scope="module", autouse=True)
def openssl() -> None:
    if shutil.which("openssl") is None:
        require_real("no openssl")


class Endpoint:
    """The join endpoint; `gateways` are those that may still renew."""

    def __init__(self, ca: InternalCA, tokens: JoinTokens) -> None:
        self.ca, self.tokens = ca, tokens
        self.gateways = {GATEWAY_ID}
        self.server = JoinServer(ca, tokens, ["127.0.0.1"], renewable=lambda g: g in self.gateways)

    @property
    def join(self) -> JoinEndpoint:
        return JoinEndpoint(f"https://127.0.0.1:{self.server.port}", self.ca.certificate_pem.decode())

    def host(self, root: Path, token: str | None = None) -> Path:
        """A host's files under `root`, as its startup script or its pod's Secret gives them."""
        for file in host_files({}, self.join, token):
            in_root(root, file.path).parent.mkdir(parents=True, exist_ok=True)
            in_root(root, file.path).write_text(file.content)
        return root

    async def run(self, root: Path, mode: str, **env: str) -> tuple[int, str]:
        return await run_on_host(root, join_command(mode, self.join), GATEHOUSE_JOIN_ATTEMPTS="2", **env)


async def endpoint_for(ca: InternalCA, tmp_path: Path) -> AsyncIterator[Endpoint]:
    endpoint = Endpoint(ca, local_join_tokens())
    await endpoint.server.start("127.0.0.1", 0)
    yield endpoint
    await endpoint.server.stop()


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[Endpoint]:
    async for endpoint in endpoint_for(InternalCA.create(), tmp_path):
        yield endpoint


@pytest.fixture
async def short_lived(tmp_path: Path) -> AsyncIterator[Endpoint]:
    """Certificates of a minute, back-dated five: renewal is due as soon as they are issued."""
    ca = InternalCA.create(leaf_validity=datetime.timedelta(minutes=1))
    async for endpoint in endpoint_for(ca, tmp_path):
        yield endpoint


def sans(certificate_pem: bytes) -> list[str]:
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(name.value) for name in names]


async def test_join_gets_a_certificate_naming_the_gateway_for_a_key_made_on_the_host(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    host = endpoint.host(tmp_path, endpoint.tokens.issue(GATEWAY_ID, 0))
    code, stderr = await endpoint.run(host, "join")
    assert code == 0, stderr
    identity = in_root(host, IDENTITY_PATH).read_bytes()
    assert sans(identity) == [gateway_uri(GATEWAY_ID)]
    assert b"PRIVATE KEY" in identity
    assert stat.S_IMODE(in_root(host, IDENTITY_PATH).stat().st_mode) == 0o600
    assert not in_root(host, JOIN_TOKEN_PATH).exists()
    # A host that has its certificate keeps it (a restarted pod, the script run again).
    assert (await endpoint.run(host, "join"))[0] == 0
    assert in_root(host, IDENTITY_PATH).read_bytes() == identity


async def test_a_token_works_once(tmp_path: Path, endpoint: Endpoint) -> None:
    token = endpoint.tokens.issue(GATEWAY_ID, 0)
    assert endpoint.tokens.is_live(token)
    assert (await endpoint.run(endpoint.host(tmp_path / "first", token), "join"))[0] == 0
    assert not endpoint.tokens.is_live(token)
    code, stderr = await endpoint.run(endpoint.host(tmp_path / "second", token), "join")
    assert code != 0 and "401" in stderr and "unknown, used or expired" in stderr
    assert not in_root(tmp_path / "second", IDENTITY_PATH).exists()


async def test_a_host_that_cannot_reach_the_endpoint_gives_up_with_the_reason(tmp_path: Path) -> None:
    ca = InternalCA.create()
    unreachable = JoinEndpoint("https://127.0.0.1:9", ca.certificate_pem.decode())
    for file in host_files({}, unreachable, "a-token"):
        in_root(tmp_path, file.path).parent.mkdir(parents=True, exist_ok=True)
        in_root(tmp_path, file.path).write_text(file.content)
    code, stderr = await run_on_host(tmp_path, join_command("join", unreachable), GATEHOUSE_JOIN_ATTEMPTS="1")
    assert code != 0 and "no answer from 127.0.0.1:9" in stderr


async def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    clock = [now]
    tokens = local_join_tokens(datetime.timedelta(hours=1), lambda: clock[0])
    token = tokens.issue(GATEWAY_ID, 0)
    clock[0] = now + datetime.timedelta(hours=2)
    assert not tokens.is_live(token)
    with pytest.raises(JoinRefusedError):
        await tokens.redeem(token)


async def test_a_token_says_its_host_is_used_once_and_cannot_be_forged() -> None:
    tokens = local_join_tokens()
    token = tokens.issue(GATEWAY_ID, 3)
    assert tokens.is_live(token)
    claim = await tokens.redeem(token)
    assert (claim.gateway_id, claim.host_index) == (GATEWAY_ID, 3)
    assert not tokens.is_live(token)
    with pytest.raises(JoinRefusedError):
        await tokens.redeem(token)
    # Another gateway's or host's claim under the same signature, or another provisioner's key: refused.
    prefix, payload, mac = token.split(".")
    claim_json = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for forged_claim in ({**claim_json, "g": "gw-other"}, {**claim_json, "h": 0}, {**claim_json, "n": "x"}):
        forged_payload = base64.urlsafe_b64encode(json.dumps(forged_claim).encode()).rstrip(b"=").decode()
        forged = f"{prefix}.{forged_payload}.{mac}"
        assert not tokens.is_live(forged)
        with pytest.raises(JoinRefusedError):
            await tokens.redeem(forged)
    elsewhere = local_join_tokens().issue(GATEWAY_ID, 3)
    for bad in (elsewhere, "", "gj1.", "gj1.x.y", token + "x", "not-a-token"):
        with pytest.raises(JoinRefusedError):
            await tokens.redeem(bad)


async def test_renewal_waits_until_two_thirds_of_the_lifetime_have_passed(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    host = endpoint.host(tmp_path, endpoint.tokens.issue(GATEWAY_ID, 0))
    assert (await endpoint.run(host, "join"))[0] == 0
    joined = in_root(host, IDENTITY_PATH).read_bytes()
    code, stderr = await endpoint.run(host, "renew")
    assert code == 0, stderr
    assert in_root(host, IDENTITY_PATH).read_bytes() == joined


async def test_a_due_certificate_is_renewed_with_itself_as_proof(
    tmp_path: Path, short_lived: Endpoint
) -> None:
    host = short_lived.host(tmp_path, short_lived.tokens.issue(GATEWAY_ID, 0))
    assert (await short_lived.run(host, "join"))[0] == 0
    joined = certificate_of(host)
    code, stderr = await short_lived.run(host, "renew")
    assert code == 0, stderr
    renewed = certificate_of(host)
    assert renewed.serial_number != joined.serial_number
    assert renewed.public_key() != joined.public_key()  # a new key, made on the host
    assert sans(in_root(host, IDENTITY_PATH).read_bytes()) == [gateway_uri(GATEWAY_ID)]
    assert stat.S_IMODE(in_root(host, IDENTITY_PATH).stat().st_mode) == 0o600
    # No token was needed or left behind.
    assert not in_root(host, JOIN_TOKEN_PATH).exists()


async def test_a_deleted_gateways_host_cannot_renew(tmp_path: Path, short_lived: Endpoint) -> None:
    host = short_lived.host(tmp_path, short_lived.tokens.issue(GATEWAY_ID, 0))
    assert (await short_lived.run(host, "join"))[0] == 0
    joined = in_root(host, IDENTITY_PATH).read_bytes()
    short_lived.gateways.clear()
    code, stderr = await short_lived.run(host, "renew")
    assert code != 0 and "403" in stderr and f"gateway {GATEWAY_ID} does not exist" in stderr
    assert in_root(host, IDENTITY_PATH).read_bytes() == joined


async def test_renewing_needs_a_certificate_of_the_ca(tmp_path: Path, short_lived: Endpoint) -> None:
    # A host without a certificate has nothing to renew.
    code, stderr = await short_lived.run(short_lived.host(tmp_path / "none"), "renew")
    assert code != 0 and "has not joined" in stderr
    # A (due) certificate naming the gateway from another CA does not get through the handshake.
    host = short_lived.host(tmp_path / "other")
    other = InternalCA.create(leaf_validity=datetime.timedelta(minutes=1))
    issued = other.client_certificate(GATEWAY_ID)
    in_root(host, IDENTITY_PATH).parent.mkdir(parents=True)
    in_root(host, IDENTITY_PATH).write_bytes(issued.certificate_pem + issued.key_pem)
    code, stderr = await short_lived.run(host, "renew")
    assert code != 0 and "no answer" in stderr
    assert in_root(host, IDENTITY_PATH).read_bytes() == issued.certificate_pem + issued.key_pem


async def test_an_expired_certificate_cannot_renew_and_says_what_to_do(tmp_path: Path) -> None:
    expired = InternalCA.create(leaf_validity=-datetime.timedelta(minutes=1))
    async for endpoint in endpoint_for(expired, tmp_path):
        host = endpoint.host(tmp_path, endpoint.tokens.issue(GATEWAY_ID, 0))
        issued = expired.client_certificate(GATEWAY_ID)
        in_root(host, IDENTITY_PATH).parent.mkdir(parents=True)
        in_root(host, IDENTITY_PATH).write_bytes(issued.certificate_pem + issued.key_pem)
        code, stderr = await endpoint.run(host, "renew")
        assert code != 0 and "has expired" in stderr and "must join again" in stderr

"""Join tokens across copies of the provisioner: a token one copy issued is redeemed at another, and
only once, however many copies try at the same moment."""

from __future__ import annotations

import asyncio

import pytest

from services.common.internal_ca import InternalCA
from services.provisioner.join import JOIN_TOKEN_KEY, JoinRefusedError, JoinTokens, RegistryRedemptions
from tests.integration.registry.conftest import RegistryServer

pytestmark = pytest.mark.real


async def test_a_token_issued_by_one_copy_is_redeemed_once_at_any(registry_server: RegistryServer) -> None:
    ca = await registry_server.registry.internal_ca()
    stubs = [registry_server.stubs(registry_server.system_token) for _ in range(3)]
    copies = [JoinTokens(ca.derived_key(JOIN_TOKEN_KEY), RegistryRedemptions(s)) for s in stubs]
    token = copies[0].issue("gw-across", 1)
    assert await asyncio.to_thread(copies[1].is_live, token)
    # Every copy tries at once: exactly one succeeds.
    outcomes = await asyncio.gather(*(copy.redeem(token) for copy in copies), return_exceptions=True)
    claims = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    assert len(claims) == 1 and (claims[0].gateway_id, claims[0].host_index) == ("gw-across", 1)
    assert all(isinstance(outcome, JoinRefusedError) for outcome in outcomes if outcome not in claims)
    for copy in copies:
        assert not await asyncio.to_thread(copy.is_live, token)
    # A key of another CA signs nothing these copies accept.
    stranger = JoinTokens(InternalCA.create().derived_key(JOIN_TOKEN_KEY), RegistryRedemptions(stubs[0]))
    with pytest.raises(JoinRefusedError):
        await copies[0].redeem(stranger.issue("gw-across", 2))
    for s in stubs:
        await s.close()

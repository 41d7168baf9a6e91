"""Authentication for services that run apart from the registry: ask it who a token belongs to."""

from __future__ import annotations

import time

import grpc

from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2
from services.common.auth import MEMBER, Principal
from services.common.errors import Unauthenticated, Unavailable

CACHE_SECONDS = 1.0


class RegistryAuthenticator:
    def __init__(self, registry_address: str) -> None:
        self._address = registry_address
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, token: str) -> Principal:
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        stubs = Stubs.connect(self._address, token)
        try:
            answer = await stubs.identity.WhoAmI(registry_pb2.WhoAmIRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(f"the registry at {self._address} does not answer; try again") from None
            raise Unauthenticated(error.details() or "the token is not valid") from None
        finally:
            await stubs.close()
        # Roles stay the registry's to enforce; here membership is what matters.
        principal = Principal(
            user=answer.user,
            system=answer.system,
            admin=answer.admin,
            projects=dict.fromkeys(answer.projects, MEMBER),
        )
        self._cache[token] = (now, principal)
        return principal

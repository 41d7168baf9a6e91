"""Who may call which service: an index of credential hashes kept current by the watch feed."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from gatehouse.v1 import resources_pb2

# The per-route context Envoy sends with each check names the service it is for.
SERVICE_ID = "service_id"
PROJECT = "project"
# ... or, for the wake check, the service to bring up.
WAKE_SERVICE_ID = "wake_service_id"
# Set by the check on every request it lets through (any copy the client sent is removed first):
# who the request is from, which rate limits count by.
PRINCIPAL_HEADER = "x-gatehouse-principal"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    # Who the credential belongs to, when allowed.
    principal: str = ""
    # A credential was sent but the index has not been loaded yet: nothing can be said about it.
    loading: bool = False


def principal_of(credential: resources_pb2.Credential) -> str:
    """A user's tokens are one principal; each API key is one of its own."""
    return f"key:{credential.id}" if credential.service_id else f"user:{credential.user}"


class CredentialIndex:
    def __init__(self) -> None:
        self._by_hash: dict[str, resources_pb2.Credential] = {}
        self._loaded = asyncio.Event()

    def replace(self, credentials: Iterable[resources_pb2.Credential]) -> None:
        self._by_hash = {credential.hash: credential for credential in credentials}
        self._loaded.set()

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def loaded(self) -> bool:
        """Whether the registry's credentials have been loaded once (they are current from then on)."""
        return self._loaded.is_set()

    async def wait_loaded(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._loaded.wait()
        except TimeoutError:
            return False
        return True

    def decide(self, authorization: str, project: str, service_id: str) -> Decision:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return Decision(False, "send `Authorization: Bearer <token>` with a project token or an API key")
        if not self.loaded:
            return Decision(False, "the gateway is loading its credentials", loading=True)
        credential = self._by_hash.get(hashlib.sha256(value.strip().encode()).hexdigest())
        if credential is None:
            return Decision(False, "the token is not valid")
        if credential.service_id:
            if credential.service_id == service_id:
                return Decision(True, principal=principal_of(credential))
            return Decision(False, "this API key is for another service")
        if credential.admin or project in credential.projects:
            return Decision(True, principal=principal_of(credential))
        return Decision(False, f'the token\'s user is not a member of project "{project}"')

"""Who is calling: bearer tokens, hashed at rest, resolved to a principal for each RPC."""

from __future__ import annotations

import contextvars
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gatehouse.leases import METADATA_KEY as LEASE_METADATA_KEY
from gatehouse.leases import LeaseClaim
from services.common.errors import NotFound, PermissionDenied, Unauthenticated

ADMIN = "admin"
MEMBER = "member"


@dataclass(frozen=True)
class Principal:
    user: str
    system: bool = False
    # A server admin: creates users, administers every project.
    admin: bool = False
    # project name -> role
    projects: Mapping[str, str] = field(default_factory=dict)

    def require_project(self, project: str) -> str:
        """The caller's role in `project`; PERMISSION_DENIED when it has none."""
        if self.system:
            return ADMIN
        role = self.projects.get(project)
        if role is None and self.admin:
            raise NotFound(f'project "{project}" not found')
        if role is None:
            raise PermissionDenied(f'user "{self.user}" is not a member of project "{project}"')
        return role

    def require_project_admin(self, project: str, what: str) -> None:
        if self.require_project(project) != ADMIN:
            raise PermissionDenied(f'{what} needs the admin role in project "{project}"')

    def require_runner(self, project: str) -> None:
        """Registering a replica sends the service's traffic where the caller says: a project admin's
        call, or Gatehouse's own."""
        self.require_project_admin(project, "registering replicas")

    def require_admin(self, what: str) -> None:
        if not (self.admin or self.system):
            raise PermissionDenied(f"{what} needs a server admin")

    def require_system(self) -> None:
        if not self.system:
            raise PermissionDenied("this call is reserved for Gatehouse's own services")


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal: ...


_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("gatehouse_principal")


def current_principal() -> Principal:
    try:
        return _current.get()
    except LookupError:
        raise Unauthenticated("no credentials: pass a token as `authorization: Bearer <token>`") from None


def set_current_principal(principal: Principal) -> contextvars.Token[Principal]:
    return _current.set(principal)


_claim: contextvars.ContextVar[LeaseClaim | None] = contextvars.ContextVar(
    "gatehouse_received_lease", default=None
)


def current_lease_claim() -> LeaseClaim | None:
    """The lease the caller says it acts under (its writes are refused once it is not the holder)."""
    return _claim.get()


def set_current_lease_claim(metadata: Mapping[str, str]) -> None:
    _claim.set(LeaseClaim.parse(metadata.get(LEASE_METADATA_KEY, "")))


def new_token() -> str:
    return "gh_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(metadata: Mapping[str, str]) -> str:
    header = metadata.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("no credentials: pass a token as `authorization: Bearer <token>`")
    return token.strip()

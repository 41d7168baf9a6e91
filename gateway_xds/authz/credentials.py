"""Who may call which service: the credentials (their hashes) that open each service, kept current by
the watch feed and pushed to the gateways' Envoys, which check each request themselves
(translate/host_auth.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gatehouse.v1 import resources_pb2
from gateway_xds.ir.policies import OpeningCredential

# Set by the check on every request it lets through (any copy the client sent is removed first):
# who the request is from, which rate limits count by.
PRINCIPAL_HEADER = "x-gatehouse-principal"


def principal_of(credential: resources_pb2.Credential) -> str:
    """A user's tokens are one principal; each API key is one of its own."""
    return f"key:{credential.id}" if credential.service_id else f"user:{credential.user}"


@dataclass(frozen=True)
class CredentialsChanged:
    """What a new set of credentials changes: every service (an admin's tokens), the services of some
    projects (members' tokens), some services (their API keys)."""

    everything: bool = False
    projects: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return self.everything or bool(self.projects) or bool(self.services)


@dataclass
class CredentialTables:
    """Hash -> principal, by what it opens: an admin's tokens every service, a member's tokens the
    services of the user's projects, an API key its own service."""

    admins: dict[str, str] = field(default_factory=dict)
    members: dict[str, dict[str, str]] = field(default_factory=dict)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)

    def replace(self, credentials: Iterable[resources_pb2.Credential]) -> CredentialsChanged:
        admins: dict[str, str] = {}
        members: dict[str, dict[str, str]] = {}
        keys: dict[str, dict[str, str]] = {}
        for credential in credentials:
            principal = principal_of(credential)
            if credential.service_id:
                keys.setdefault(credential.service_id, {})[credential.hash] = principal
            elif credential.admin:
                admins[credential.hash] = principal
            else:
                for project in credential.projects:
                    members.setdefault(project, {})[credential.hash] = principal
        changed = CredentialsChanged(
            everything=admins != self.admins,
            projects=_changed(members, self.members),
            services=_changed(keys, self.keys),
        )
        self.admins, self.members, self.keys = admins, members, keys
        return changed

    def opening(self, project: str, service_id: str) -> tuple[OpeningCredential, ...]:
        """The credentials that open the service, by hash."""
        table = {**self.admins, **self.members.get(project, {}), **self.keys.get(service_id, {})}
        return tuple(OpeningCredential(digest, principal) for digest, principal in sorted(table.items()))


def _changed(new: dict[str, dict[str, str]], old: dict[str, dict[str, str]]) -> frozenset[str]:
    return frozenset(name for name in new.keys() | old.keys() if new.get(name) != old.get(name))

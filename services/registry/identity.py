"""Projects, users and tokens: first-start bootstrap and the database-backed authenticator."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.auth import ADMIN, Principal, hash_token, new_token
from services.common.db import BOOTSTRAP_LOCK, Database, hold_until_commit
from services.common.errors import Unauthenticated
from services.registry import credentials, feed
from services.registry.models import Member, Project, Token, User
from services.registry.names import new_id

DEFAULT_PROJECT = "main"
ADMIN_USER = "admin"
SYSTEM_USER = "gatehouse-system"


class DatabaseAuthenticator:
    """Tokens to principals, remembered for a second; changes to users, tokens or members made
    through this registry forget them at once."""

    CACHE_SECONDS = 1.0

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: dict[str, tuple[float, Principal]] = {}
        # Concurrent calls with one token wait for one load (50 clients of one token, once a second).
        self._loading: dict[str, asyncio.Future[Principal]] = {}
        self._generation = 0

    def forget(self) -> None:
        self._cache.clear()
        self._loading.clear()
        self._generation += 1

    async def authenticate(self, token: str) -> Principal:
        token_hash = hash_token(token)
        now = time.monotonic()
        cached = self._cache.get(token_hash)
        if cached is not None and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        loading = self._loading.get(token_hash)
        if loading is None:
            loading = asyncio.ensure_future(self._load_and_remember(token_hash, now))
            self._loading[token_hash] = loading
        return await asyncio.shield(loading)

    async def _load_and_remember(self, token_hash: str, now: float) -> Principal:
        generation = self._generation
        try:
            principal = await self._load(token_hash)
        finally:
            if self._generation == generation:
                self._loading.pop(token_hash, None)
        # What a forget() during the load made stale is not remembered.
        if self._generation == generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token_hash] = (now, principal)
        return principal

    async def _load(self, token_hash: str) -> Principal:
        async with self._db.read() as session:
            result = await session.execute(
                select(User).join(Token, Token.user_id == User.id).where(Token.token_hash == token_hash)
            )
            user = result.scalar_one_or_none()
            if user is None:
                raise Unauthenticated(
                    "the token is not valid: check `token` in the CLI config or $GATEHOUSE_TOKEN"
                )
            members = await session.execute(
                select(Member.project_id, Member.role).where(Member.user_id == user.id)
            )
            roles = {project: role for project, role in members.all()}
            if user.admin:
                # A server admin administers every project.
                everything = await session.execute(select(Project.id))
                roles = dict.fromkeys(everything.scalars().all(), ADMIN) | roles
            return Principal(user=user.name, system=user.system, admin=user.admin, projects=roles)


async def create_project(session: AsyncSession, name: str, owner: User) -> Project:
    project = Project(id=name, name=name)
    session.add(project)
    await session.flush()
    session.add(Member(project_id=name, user_id=owner.id, role=ADMIN))
    await credentials.publish_user(session, owner)
    return project


async def create_user(session: AsyncSession, name: str, system: bool = False, admin: bool = False) -> User:
    user = User(id=new_id("user"), name=name, system=system, admin=admin)
    session.add(user)
    await session.flush()
    return user


async def issue_token(session: AsyncSession, user: User) -> str:
    token = new_token()
    row = Token(id=new_id("tok"), user_id=user.id, token_hash=hash_token(token))
    session.add(row)
    if not user.system:
        revision = await feed.next_revision(session)
        credential = await credentials.token_credential(session, row, user)
        credential.resource_version = revision
        feed.record(session, revision, feed.PUT, credential)
    return token


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def _read_yaml(path: Path) -> dict[str, str]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


@dataclass(frozen=True)
class BootstrapFiles:
    cli_config: Path
    system_token: Path


async def bootstrap(db: Database, files: BootstrapFiles, api_address: str) -> None:
    """On first start: project `main`, an admin token in the CLI config, a token for the services.

    The files are written only once the transaction that made their tokens has committed."""
    config = _read_yaml(files.cli_config)
    write_config = False
    system_token: str | None = None
    async with db.write() as session:
        await hold_until_commit(session, BOOTSTRAP_LOCK)
        admin = (await session.execute(select(User).where(User.name == ADMIN_USER))).scalar_one_or_none()
        if admin is None:
            admin = await create_user(session, ADMIN_USER, admin=True)
            await create_project(session, DEFAULT_PROJECT, admin)
        if not config.get("token"):
            config = {
                "server": api_address,
                "project": DEFAULT_PROJECT,
                "token": await issue_token(session, admin),
            }
            write_config = True
        system = (await session.execute(select(User).where(User.name == SYSTEM_USER))).scalar_one_or_none()
        if system is None:
            system = await create_user(session, SYSTEM_USER, system=True)
        provided = os.environ.get("GATEHOUSE_SYSTEM_TOKEN")
        if provided:
            # Separate processes (docker-compose) share a token given to all of them.
            known = await session.execute(select(Token).where(Token.token_hash == hash_token(provided)))
            if known.scalar_one_or_none() is None:
                session.add(Token(id=new_id("tok"), user_id=system.id, token_hash=hash_token(provided)))
        elif not files.system_token.exists():
            system_token = await issue_token(session, system)
    if config.get("server") != api_address:
        config["server"] = api_address
        write_config = True
    if write_config:
        write_private(files.cli_config, yaml.safe_dump(config, sort_keys=False))
    if system_token is not None:
        write_private(files.system_token, system_token + "\n")

"""Credentials on the watch feed: each token or API key hash with what it opens, re-published
whenever that changes, so gateways can check a bearer value without asking the registry."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.v1 import resources_pb2
from services.common.auth import hash_token
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.registry import feed
from services.registry.models import Member, ServiceKeyRow, ServiceRow, Token, User
from services.registry.names import new_id, readable_name

KEY_PREFIX = "ghk_"


async def _projects(session: AsyncSession, user_id: str) -> list[str]:
    result = await session.execute(
        select(Member.project_id).where(Member.user_id == user_id).order_by(Member.project_id)
    )
    return list(result.scalars().all())


async def token_credential(session: AsyncSession, token: Token, user: User) -> resources_pb2.Credential:
    return resources_pb2.Credential(
        id=token.id,
        hash=token.token_hash,
        user=user.name,
        projects=await _projects(session, user.id),
        admin=user.admin,
    )


def key_credential(key: ServiceKeyRow) -> resources_pb2.Credential:
    return resources_pb2.Credential(id=key.id, hash=key.key_hash, service_id=key.service_id)


async def publish_user(session: AsyncSession, user: User) -> None:
    """Re-publishes every token of `user` (after its memberships changed)."""
    if user.system:
        return
    await session.flush()
    tokens = (await session.execute(select(Token).where(Token.user_id == user.id))).scalars().all()
    for token in tokens:
        revision = await feed.next_revision(session)
        credential = await token_credential(session, token, user)
        credential.resource_version = revision
        feed.record(session, revision, feed.PUT, credential)


async def withdraw_tokens(session: AsyncSession, tokens: Sequence[Token]) -> None:
    for token in tokens:
        revision = await feed.next_revision(session)
        feed.record(
            session, revision, feed.DELETE, resources_pb2.Credential(id=token.id, hash=token.token_hash)
        )


async def all_credentials(session: AsyncSession) -> list[resources_pb2.Credential]:
    rows = await session.execute(
        select(Token, User).join(User, User.id == Token.user_id).where(User.system.is_(False))
    )
    result = [await token_credential(session, token, user) for token, user in rows.all()]
    keys = await session.execute(select(ServiceKeyRow))
    return result + [key_credential(key) for key in keys.scalars().all()]


async def create_key(session: AsyncSession, service: ServiceRow, name: str) -> tuple[ServiceKeyRow, str]:
    existing = await session.execute(select(ServiceKeyRow.name).where(ServiceKeyRow.service_id == service.id))
    taken = set(existing.scalars().all())
    name = name or readable_name("key-", taken)
    if name in taken:
        raise AlreadyExists(f'service "{service.name}" already has an API key named "{name}"')
    if len(name) > 64:
        raise InvalidArgument("an API key's name is at most 64 characters")
    value = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ServiceKeyRow(id=new_id("key"), service_id=service.id, name=name, key_hash=hash_token(value))
    session.add(key)
    await session.flush()
    revision = await feed.next_revision(session)
    credential = key_credential(key)
    credential.resource_version = revision
    feed.record(session, revision, feed.PUT, credential)
    return key, value


async def keys_of(session: AsyncSession, service: ServiceRow) -> Sequence[ServiceKeyRow]:
    result = await session.execute(
        select(ServiceKeyRow).where(ServiceKeyRow.service_id == service.id).order_by(ServiceKeyRow.name)
    )
    return result.scalars().all()


async def delete_key(session: AsyncSession, service: ServiceRow, name: str) -> None:
    result = await session.execute(
        select(ServiceKeyRow).where(ServiceKeyRow.service_id == service.id, ServiceKeyRow.name == name)
    )
    key = result.scalar_one_or_none()
    if key is None:
        raise NotFound(f'service "{service.name}" has no API key named "{name}"')
    await withdraw_key(session, key)


async def withdraw_key(session: AsyncSession, key: ServiceKeyRow) -> None:
    revision = await feed.next_revision(session)
    feed.record(session, revision, feed.DELETE, key_credential(key))
    await session.delete(key)

"""Certificates, ACME challenges and accounts, inside one write transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.v1 import registry_pb2, resources_pb2
from services.common.crypto import Cipher
from services.common.errors import InvalidArgument, NotFound
from services.registry import feed
from services.registry.convert import timestamp
from services.registry.models import AcmeAccountRow, AcmeChallengeRow, GatewayRow, TlsCertificateRow, utcnow
from services.registry.names import new_id

STATES = ("pending", "issued", "failed")


def certificate_message(row: TlsCertificateRow) -> resources_pb2.TlsCertificate:
    message = resources_pb2.TlsCertificate(
        id=row.id,
        project=row.project_id,
        gateway_id=row.gateway_id,
        hostnames=json.loads(row.hostnames),
        issuer=row.issuer,
        state=row.state,
        message=row.message,
        chain_pem=row.chain_pem,
        resource_version=row.resource_version,
    )
    if row.not_after is not None:
        message.not_after.CopyFrom(timestamp(row.not_after))
    if row.renew_after is not None:
        message.renew_after.CopyFrom(timestamp(row.renew_after))
    return message


def challenge_message(row: AcmeChallengeRow) -> resources_pb2.AcmeChallenge:
    return resources_pb2.AcmeChallenge(
        token=row.token,
        key_authorization=row.key_authorization,
        gateway_id=row.gateway_id,
        hostname=row.hostname,
        resource_version=row.resource_version,
    )


async def list_rows(session: AsyncSession, project: str | None = None) -> Sequence[TlsCertificateRow]:
    query = select(TlsCertificateRow).order_by(TlsCertificateRow.gateway_id, TlsCertificateRow.hostnames)
    if project is not None:
        query = query.where(TlsCertificateRow.project_id == project)
    return (await session.execute(query)).scalars().all()


async def challenges(session: AsyncSession) -> Sequence[AcmeChallengeRow]:
    return (await session.execute(select(AcmeChallengeRow).order_by(AcmeChallengeRow.token))).scalars().all()


async def put(
    session: AsyncSession, cipher: Cipher, certificate: resources_pb2.TlsCertificate, key_pem: str
) -> TlsCertificateRow:
    if certificate.state not in STATES:
        raise InvalidArgument(f"certificate state {certificate.state!r} is not one of {', '.join(STATES)}")
    gateway = await session.get(GatewayRow, certificate.gateway_id)
    if gateway is None:
        raise NotFound(f'gateway id "{certificate.gateway_id}" not found')
    hostnames = json.dumps(sorted(certificate.hostnames))
    revision = await feed.next_revision(session)
    row = await session.get(TlsCertificateRow, certificate.id) if certificate.id else None
    if row is None:
        found = await session.execute(
            select(TlsCertificateRow).where(
                TlsCertificateRow.gateway_id == gateway.id, TlsCertificateRow.hostnames == hostnames
            )
        )
        row = found.scalar_one_or_none()
    if row is None:
        row = TlsCertificateRow(id=new_id("cert"), project_id=gateway.project_id, gateway_id=gateway.id)
        session.add(row)
    row.hostnames = hostnames
    row.issuer = certificate.issuer
    row.state = certificate.state
    row.message = certificate.message
    row.chain_pem = certificate.chain_pem
    if key_pem:
        row.key_encrypted = cipher.encrypt(key_pem)
    row.not_after = certificate.not_after.ToDatetime() if certificate.HasField("not_after") else None
    row.renew_after = certificate.renew_after.ToDatetime() if certificate.HasField("renew_after") else None
    row.updated_at = utcnow()
    row.resource_version = revision
    await session.flush()
    feed.record(session, row.resource_version, feed.PUT, certificate_message(row))
    return row


async def remove(session: AsyncSession, row: TlsCertificateRow) -> None:
    revision = await feed.next_revision(session)
    feed.record(session, revision, feed.DELETE, certificate_message(row))
    await session.delete(row)


def key_of(cipher: Cipher, row: TlsCertificateRow) -> str:
    if row.key_encrypted is None:
        raise NotFound(f'certificate "{row.id}" has no private key yet')
    return cipher.decrypt(row.key_encrypted)


async def put_challenge(session: AsyncSession, challenge: resources_pb2.AcmeChallenge) -> AcmeChallengeRow:
    if await session.get(GatewayRow, challenge.gateway_id) is None:
        raise NotFound(f'gateway id "{challenge.gateway_id}" not found')
    revision = await feed.next_revision(session)
    row = await session.get(AcmeChallengeRow, challenge.token)
    if row is None:
        row = AcmeChallengeRow(token=challenge.token)
        session.add(row)
    row.key_authorization = challenge.key_authorization
    row.gateway_id = challenge.gateway_id
    row.hostname = challenge.hostname
    row.resource_version = revision
    await session.flush()
    feed.record(session, row.resource_version, feed.PUT, challenge_message(row))
    return row


async def remove_challenge(session: AsyncSession, token: str) -> None:
    row = await session.get(AcmeChallengeRow, token)
    if row is None:
        return
    revision = await feed.next_revision(session)
    feed.record(session, revision, feed.DELETE, challenge_message(row))
    await session.delete(row)


async def remove_for_gateway(session: AsyncSession, gateway_id: str) -> None:
    """A gateway's certificates and challenges go with it, each with its DELETE event."""
    for row in (
        (await session.execute(select(TlsCertificateRow).where(TlsCertificateRow.gateway_id == gateway_id)))
        .scalars()
        .all()
    ):
        await remove(session, row)
    for challenge in (
        (await session.execute(select(AcmeChallengeRow).where(AcmeChallengeRow.gateway_id == gateway_id)))
        .scalars()
        .all()
    ):
        await remove_challenge(session, challenge.token)


async def account(session: AsyncSession, cipher: Cipher, directory_url: str) -> registry_pb2.AcmeAccount:
    row = await session.get(AcmeAccountRow, directory_url)
    if row is None:
        raise NotFound(f"no ACME account for {directory_url}")
    return registry_pb2.AcmeAccount(
        directory_url=directory_url,
        key_json=cipher.decrypt(row.key_encrypted),
        registration_json=row.registration_json,
    )


async def put_account(session: AsyncSession, cipher: Cipher, account: registry_pb2.AcmeAccount) -> None:
    if not account.directory_url or not account.key_json:
        raise InvalidArgument("an ACME account needs its directory URL and key")
    row = await session.get(AcmeAccountRow, account.directory_url)
    if row is None:
        row = AcmeAccountRow(directory_url=account.directory_url)
        session.add(row)
    row.key_encrypted = cipher.encrypt(account.key_json)
    row.registration_json = account.registration_json

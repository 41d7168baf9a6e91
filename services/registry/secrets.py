"""Project secrets, encrypted at rest, and `${{ secrets.NAME }}` interpolation in configurations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse import limits
from services.common.crypto import Cipher
from services.common.errors import InvalidArgument, NotFound
from services.registry.models import SecretRow

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z0-9_]+)\s*\}\}")


def check_name(name: str) -> None:
    if not SECRET_NAME.match(name):
        raise InvalidArgument(f"{name!r} is not a secret name: use letters, digits and underscores")


async def put(session: AsyncSession, cipher: Cipher, project: str, name: str, value: str) -> None:
    check_name(name)
    size = len(value.encode())
    if size > limits.SECRET_VALUE_BYTES:
        raise InvalidArgument(
            f"the secret {name} is {limits.size(size)}: "
            f"a secret is at most {limits.size(limits.SECRET_VALUE_BYTES)}"
        )
    row = await session.get(SecretRow, (project, name))
    if row is None:
        session.add(SecretRow(project_id=project, name=name, value_encrypted=cipher.encrypt(value)))
    else:
        row.value_encrypted = cipher.encrypt(value)


async def names(session: AsyncSession, project: str) -> Sequence[str]:
    result = await session.execute(
        select(SecretRow.name).where(SecretRow.project_id == project).order_by(SecretRow.name)
    )
    return result.scalars().all()


async def remove(session: AsyncSession, project: str, name: str) -> None:
    row = await session.get(SecretRow, (project, name))
    if row is None:
        raise NotFound(f'secret "{name}" not found in project "{project}"')
    await session.delete(row)


def references(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(REFERENCE.findall(value))
    if isinstance(value, dict):
        return set().union(*(references(item) for item in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(references(item) for item in value)) if value else set()
    return set()


def _substitute(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return REFERENCE.sub(lambda match: values[match.group(1)], value)
    if isinstance(value, dict):
        return {key: _substitute(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, values) for item in value]
    return value


async def check_known(session: AsyncSession, project: str, data: Any) -> None:
    """Every secret `data` refers to exists (one clear error naming the missing ones)."""
    wanted = references(data)
    if not wanted:
        return
    found = await session.execute(
        select(SecretRow.name).where(SecretRow.project_id == project, SecretRow.name.in_(wanted))
    )
    missing = sorted(wanted - set(found.scalars().all()))
    if missing:
        raise InvalidArgument(
            f'unknown secret {", ".join(missing)} in project "{project}": '
            f"add it with `gatehouse secrets add {missing[0]} VALUE`"
        )


async def interpolate(
    session: AsyncSession, cipher: Cipher, project: str, data: dict[str, Any]
) -> dict[str, Any]:
    wanted = references(data)
    if not wanted:
        return data
    await check_known(session, project, data)
    result = await session.execute(
        select(SecretRow).where(SecretRow.project_id == project, SecretRow.name.in_(wanted))
    )
    values = {row.name: cipher.decrypt(row.value_encrypted) for row in result.scalars()}
    return _substitute(data, values)  # type: ignore[no-any-return]

"""Projects, members, users and tokens, inside one write transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.v1 import registry_pb2
from services.common.auth import ADMIN, MEMBER
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.registry import credentials
from services.registry.configurations import NAME_PATTERN
from services.registry.identity import create_project, create_user, issue_token
from services.registry.models import GatewayRow, Member, Project, ServiceRow, Token, User

ROLES = (ADMIN, MEMBER)


def check_name(kind: str, name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(
            f"{name!r} is not a valid {kind} name: use 2-41 lowercase letters, digits and dashes, "
            "starting with a letter"
        )


async def user_by_name(session: AsyncSession, name: str) -> User:
    user = (await session.execute(select(User).where(User.name == name))).scalar_one_or_none()
    if user is None or user.system:
        raise NotFound(f'user "{name}" not found')
    return user


async def project_by_name(session: AsyncSession, name: str) -> Project:
    project = await session.get(Project, name)
    if project is None:
        raise NotFound(f'project "{name}" not found')
    return project


async def project_message(session: AsyncSession, project: Project) -> registry_pb2.Project:
    rows = await session.execute(
        select(User.name, Member.role)
        .join(Member, Member.user_id == User.id)
        .where(Member.project_id == project.id)
        .order_by(User.name)
    )
    return registry_pb2.Project(
        name=project.name, members=[registry_pb2.Member(user=user, role=role) for user, role in rows.all()]
    )


async def create(session: AsyncSession, name: str, owner_name: str) -> Project:
    check_name("project", name)
    if await session.get(Project, name) is not None:
        raise AlreadyExists(f'project "{name}" already exists')
    owner = (await session.execute(select(User).where(User.name == owner_name))).scalar_one()
    return await create_project(session, name, owner)


async def visible(session: AsyncSession, names: Sequence[str] | None) -> Sequence[Project]:
    query = select(Project).order_by(Project.name)
    if names is not None:
        query = query.where(Project.id.in_(names))
    return (await session.execute(query)).scalars().all()


async def remove(session: AsyncSession, project: Project) -> None:
    for table, kind in ((GatewayRow, "gateways"), (ServiceRow, "services")):
        count = (
            await session.execute(select(func.count()).where(table.project_id == project.id))
        ).scalar_one()
        if count:
            raise FailedPrecondition(f'project "{project.name}" still has {count} {kind}: delete them first')
    members = (
        (
            await session.execute(
                select(User).join(Member, Member.user_id == User.id).where(Member.project_id == project.id)
            )
        )
        .scalars()
        .all()
    )
    await session.execute(delete(Member).where(Member.project_id == project.id))
    await session.delete(project)
    for user in members:
        await credentials.publish_user(session, user)


async def set_member(session: AsyncSession, project: Project, user_name: str, role: str) -> None:
    if role not in ROLES:
        raise InvalidArgument(f"role {role!r} is not a role: use admin or member")
    user = await user_by_name(session, user_name)
    member = await session.get(Member, (project.id, user.id))
    if member is None:
        session.add(Member(project_id=project.id, user_id=user.id, role=role))
    else:
        member.role = role
    await credentials.publish_user(session, user)


async def remove_member(session: AsyncSession, project: Project, user_name: str) -> None:
    user = await user_by_name(session, user_name)
    member = await session.get(Member, (project.id, user.id))
    if member is None:
        raise NotFound(f'user "{user_name}" is not a member of project "{project.name}"')
    admins = await session.execute(
        select(func.count()).where(Member.project_id == project.id, Member.role == ADMIN)
    )
    if member.role == ADMIN and admins.scalar_one() == 1:
        raise FailedPrecondition(
            f'"{user_name}" is the last admin of project "{project.name}": add another first'
        )
    await session.delete(member)
    await credentials.publish_user(session, user)


async def new_user(session: AsyncSession, name: str, admin: bool) -> tuple[User, str]:
    check_name("user", name)
    if (await session.execute(select(User).where(User.name == name))).scalar_one_or_none() is not None:
        raise AlreadyExists(f'user "{name}" already exists')
    user = await create_user(session, name, admin=admin)
    return user, await issue_token(session, user)


async def users(session: AsyncSession) -> Sequence[User]:
    return (
        (await session.execute(select(User).where(User.system.is_(False)).order_by(User.name)))
        .scalars()
        .all()
    )


async def revoke_tokens(session: AsyncSession, user: User) -> int:
    tokens = (await session.execute(select(Token).where(Token.user_id == user.id))).scalars().all()
    await credentials.withdraw_tokens(session, tokens)
    for token in tokens:
        await session.delete(token)
    return len(tokens)

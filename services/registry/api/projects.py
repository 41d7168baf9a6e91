"""Projects and users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import PermissionDenied
from services.registry import feed, projects
from services.registry.api.context import RegistryContext
from services.registry.identity import issue_token


class _IdentityWrites:
    _ctx: RegistryContext

    @asynccontextmanager
    async def _identity_write(self) -> AsyncIterator[AsyncSession]:
        async with self._ctx.write() as session:
            feed.touch_identity(session)
            yield session
        self._ctx.forget_principals()


class ProjectsServicer(_IdentityWrites, registry_pb2_grpc.ProjectsServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def Create(
        self,
        request: registry_pb2.CreateProjectRequest,
        context: grpc.aio.ServicerContext[registry_pb2.CreateProjectRequest, registry_pb2.Project],
    ) -> registry_pb2.Project:
        principal = current_principal()
        async with self._identity_write() as session:
            project = await projects.create(session, request.name, principal.user)
            return await projects.project_message(session, project)

    async def List(
        self,
        request: registry_pb2.ListProjectsRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ListProjectsRequest, registry_pb2.ListProjectsResponse
        ],
    ) -> registry_pb2.ListProjectsResponse:
        principal = current_principal()
        names = None if principal.admin or principal.system else list(principal.projects)
        async with self._ctx.read() as session:
            rows = await projects.visible(session, names)
            return registry_pb2.ListProjectsResponse(
                projects=[await projects.project_message(session, row) for row in rows]
            )

    async def Delete(
        self,
        request: registry_pb2.DeleteProjectRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.DeleteProjectRequest, registry_pb2.DeleteProjectResponse
        ],
    ) -> registry_pb2.DeleteProjectResponse:
        current_principal().require_project_admin(request.name, "deleting a project")
        async with self._identity_write() as session:
            await projects.remove(session, await projects.project_by_name(session, request.name))
        return registry_pb2.DeleteProjectResponse()

    async def SetMember(
        self,
        request: registry_pb2.SetMemberRequest,
        context: grpc.aio.ServicerContext[registry_pb2.SetMemberRequest, registry_pb2.Project],
    ) -> registry_pb2.Project:
        current_principal().require_project_admin(request.project, "managing members")
        async with self._identity_write() as session:
            project = await projects.project_by_name(session, request.project)
            await projects.set_member(session, project, request.user, request.role or "member")
            await session.flush()
            return await projects.project_message(session, project)

    async def RemoveMember(
        self,
        request: registry_pb2.RemoveMemberRequest,
        context: grpc.aio.ServicerContext[registry_pb2.RemoveMemberRequest, registry_pb2.Project],
    ) -> registry_pb2.Project:
        current_principal().require_project_admin(request.project, "managing members")
        async with self._identity_write() as session:
            project = await projects.project_by_name(session, request.project)
            await projects.remove_member(session, project, request.user)
            await session.flush()
            return await projects.project_message(session, project)


class UsersServicer(_IdentityWrites, registry_pb2_grpc.UsersServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def Create(
        self,
        request: registry_pb2.CreateUserRequest,
        context: grpc.aio.ServicerContext[registry_pb2.CreateUserRequest, registry_pb2.UserWithToken],
    ) -> registry_pb2.UserWithToken:
        current_principal().require_admin("creating users")
        async with self._identity_write() as session:
            user, token = await projects.new_user(session, request.name, request.admin)
            return registry_pb2.UserWithToken(
                user=registry_pb2.User(name=user.name, admin=user.admin), token=token
            )

    async def List(
        self,
        request: registry_pb2.ListUsersRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ListUsersRequest, registry_pb2.ListUsersResponse],
    ) -> registry_pb2.ListUsersResponse:
        current_principal().require_admin("listing users")
        async with self._ctx.read() as session:
            rows = await projects.users(session)
        return registry_pb2.ListUsersResponse(
            users=[registry_pb2.User(name=u.name, admin=u.admin) for u in rows]
        )

    def _require_self_or_admin(self, user: str, what: str) -> None:
        principal = current_principal()
        if principal.user != user and not principal.admin:
            raise PermissionDenied(f"{what} of another user needs a server admin")

    async def IssueToken(
        self,
        request: registry_pb2.IssueTokenRequest,
        context: grpc.aio.ServicerContext[registry_pb2.IssueTokenRequest, registry_pb2.UserWithToken],
    ) -> registry_pb2.UserWithToken:
        self._require_self_or_admin(request.user, "issuing tokens")
        async with self._identity_write() as session:
            user = await projects.user_by_name(session, request.user)
            token = await issue_token(session, user)
            return registry_pb2.UserWithToken(
                user=registry_pb2.User(name=user.name, admin=user.admin), token=token
            )

    async def RevokeTokens(
        self,
        request: registry_pb2.RevokeTokensRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.RevokeTokensRequest, registry_pb2.RevokeTokensResponse
        ],
    ) -> registry_pb2.RevokeTokensResponse:
        self._require_self_or_admin(request.user, "revoking tokens")
        async with self._identity_write() as session:
            user = await projects.user_by_name(session, request.user)
            return registry_pb2.RevokeTokensResponse(revoked=await projects.revoke_tokens(session, user))

"""Leases, the internal CA and used join tokens, for the copies of Gatehouse's own processes."""

from __future__ import annotations

import grpc
from sqlalchemy.exc import IntegrityError

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import FailedPrecondition, InvalidArgument
from services.registry import control_plane, leases
from services.registry.api.context import RegistryContext

MAX_LEASE_SECONDS = 300.0


def _lease(name: str, state: leases.LeaseState) -> registry_pb2.Lease:
    return registry_pb2.Lease(
        name=name,
        holder=state.holder,
        fence=state.fence,
        held=state.held,
        remaining_seconds=state.remaining,
    )


class ControlPlaneServicer(registry_pb2_grpc.ControlPlaneServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def AcquireLease(
        self,
        request: registry_pb2.AcquireLeaseRequest,
        context: grpc.aio.ServicerContext[registry_pb2.AcquireLeaseRequest, registry_pb2.Lease],
    ) -> registry_pb2.Lease:
        current_principal().require_system()
        if not request.name or not request.holder or not 0 < request.ttl_seconds <= MAX_LEASE_SECONDS:
            raise InvalidArgument(
                f"a lease needs a name, a holder and a ttl of (0, {MAX_LEASE_SECONDS:.0f}] s"
            )
        try:
            async with self._ctx.db.write() as session:
                state = await leases.acquire(session, request.name, request.holder, request.ttl_seconds)
        except IntegrityError:
            # Another copy took a lease that did not exist yet at the same moment.
            return registry_pb2.Lease(name=request.name, held=False, remaining_seconds=request.ttl_seconds)
        return _lease(request.name, state)

    async def ReleaseLease(
        self,
        request: registry_pb2.ReleaseLeaseRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ReleaseLeaseRequest, registry_pb2.Lease],
    ) -> registry_pb2.Lease:
        current_principal().require_system()
        async with self._ctx.db.write() as session:
            state = await leases.release(session, request.name, request.holder)
        return registry_pb2.Lease(name=request.name) if state is None else _lease(request.name, state)

    async def GetInternalCA(
        self,
        request: registry_pb2.GetInternalCARequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetInternalCARequest, registry_pb2.InternalCA],
    ) -> registry_pb2.InternalCA:
        current_principal().require_system()
        async with self._ctx.read() as session:
            sealed = await control_plane.sealed_internal_ca(session)
        if sealed is None:
            raise FailedPrecondition("the registry has not made the internal CA yet: it does on start")
        return registry_pb2.InternalCA(certificate_pem=sealed[0], key_encrypted=sealed[1])

    async def RedeemJoinToken(
        self,
        request: registry_pb2.RedeemJoinTokenRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.RedeemJoinTokenRequest, registry_pb2.RedeemJoinTokenResponse
        ],
    ) -> registry_pb2.RedeemJoinTokenResponse:
        current_principal().require_system()
        if len(request.digest) != 64:
            raise InvalidArgument("digest: the SHA-256 of the token, in hex")
        if request.check_only:
            async with self._ctx.read() as session:
                used = await control_plane.join_token_used(session, request.digest)
            return registry_pb2.RedeemJoinTokenResponse(used_before=used)
        try:
            async with self._ctx.db.write() as session:
                used = await control_plane.redeem_join_token(session, request.digest, request.expires_at)
        except IntegrityError:
            used = True  # another copy redeemed it at the same moment
        return registry_pb2.RedeemJoinTokenResponse(used_before=used)

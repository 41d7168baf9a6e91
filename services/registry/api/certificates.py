"""Certificates: a project's list for users; storage of certificates, keys and ACME state for the
certificates service; keys for gateway_xds."""

from __future__ import annotations

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc, resources_pb2
from services.common.auth import current_principal
from services.common.errors import NotFound
from services.registry import certificates
from services.registry.api.context import RegistryContext
from services.registry.models import TlsCertificateRow


class TlsCertificatesServicer(registry_pb2_grpc.TlsCertificatesServicer):
    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx

    async def List(
        self,
        request: registry_pb2.ListTlsCertificatesRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.ListTlsCertificatesRequest, registry_pb2.ListTlsCertificatesResponse
        ],
    ) -> registry_pb2.ListTlsCertificatesResponse:
        current_principal().require_project(request.project)
        async with self._ctx.read() as session:
            rows = await certificates.list_rows(session, request.project)
        return registry_pb2.ListTlsCertificatesResponse(
            certificates=[certificates.certificate_message(row) for row in rows]
        )

    async def Put(
        self,
        request: registry_pb2.PutTlsCertificateRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.PutTlsCertificateRequest, resources_pb2.TlsCertificate
        ],
    ) -> resources_pb2.TlsCertificate:
        current_principal().require_system()
        async with self._ctx.write() as session:
            row = await certificates.put(
                session, self._ctx.cipher, request.certificate, request.private_key_pem
            )
            return certificates.certificate_message(row)

    async def Delete(
        self,
        request: registry_pb2.DeleteTlsCertificateRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.DeleteTlsCertificateRequest, registry_pb2.DeleteTlsCertificateResponse
        ],
    ) -> registry_pb2.DeleteTlsCertificateResponse:
        current_principal().require_system()
        async with self._ctx.write() as session:
            row = await session.get(TlsCertificateRow, request.id)
            if row is not None:
                await certificates.remove(session, row)
        return registry_pb2.DeleteTlsCertificateResponse()

    async def GetKey(
        self,
        request: registry_pb2.GetTlsKeyRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetTlsKeyRequest, registry_pb2.TlsKey],
    ) -> registry_pb2.TlsKey:
        current_principal().require_system()
        async with self._ctx.read() as session:
            row = await session.get(TlsCertificateRow, request.id)
            if row is None:
                raise NotFound(f'certificate "{request.id}" not found')
            return registry_pb2.TlsKey(id=row.id, private_key_pem=certificates.key_of(self._ctx.cipher, row))

    async def PutChallenge(
        self,
        request: resources_pb2.AcmeChallenge,
        context: grpc.aio.ServicerContext[resources_pb2.AcmeChallenge, resources_pb2.AcmeChallenge],
    ) -> resources_pb2.AcmeChallenge:
        current_principal().require_system()
        async with self._ctx.write() as session:
            return certificates.challenge_message(await certificates.put_challenge(session, request))

    async def DeleteChallenge(
        self,
        request: registry_pb2.DeleteChallengeRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.DeleteChallengeRequest, registry_pb2.DeleteChallengeResponse
        ],
    ) -> registry_pb2.DeleteChallengeResponse:
        current_principal().require_system()
        async with self._ctx.write() as session:
            await certificates.remove_challenge(session, request.token)
        return registry_pb2.DeleteChallengeResponse()

    async def GetAccount(
        self,
        request: registry_pb2.GetAcmeAccountRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetAcmeAccountRequest, registry_pb2.AcmeAccount],
    ) -> registry_pb2.AcmeAccount:
        current_principal().require_system()
        async with self._ctx.read() as session:
            return await certificates.account(session, self._ctx.cipher, request.directory_url)

    async def PutAccount(
        self,
        request: registry_pb2.AcmeAccount,
        context: grpc.aio.ServicerContext[registry_pb2.AcmeAccount, registry_pb2.AcmeAccount],
    ) -> registry_pb2.AcmeAccount:
        current_principal().require_system()
        async with self._ctx.write() as session:
            await certificates.put_account(session, self._ctx.cipher, request)
        return registry_pb2.AcmeAccount(directory_url=request.directory_url)

"""The certificates service's API: renew a certificate now."""

from __future__ import annotations

import grpc

from gatehouse.v1 import certificates_pb2, certificates_pb2_grpc
from services.certificates.reconciler import CertificatesReconciler
from services.common.auth import current_principal
from services.common.errors import NotFound
from services.common.grpc_server import Registration


class CertificatesServicer(certificates_pb2_grpc.CertificatesServicer):
    def __init__(self, reconciler: CertificatesReconciler) -> None:
        self._reconciler = reconciler

    async def Renew(
        self,
        request: certificates_pb2.RenewCertificateRequest,
        context: grpc.aio.ServicerContext[
            certificates_pb2.RenewCertificateRequest, certificates_pb2.RenewCertificateResponse
        ],
    ) -> certificates_pb2.RenewCertificateResponse:
        current_principal().require_project(request.project)
        if not self._reconciler.renew(request.project, request.hostname):
            raise NotFound(f'no certificate for {request.hostname} in project "{request.project}"')
        return certificates_pb2.RenewCertificateResponse()


def registrations(reconciler: CertificatesReconciler) -> list[Registration]:
    name = certificates_pb2.DESCRIPTOR.services_by_name["Certificates"].full_name
    return [
        Registration(
            name, CertificatesServicer(reconciler), certificates_pb2_grpc.add_CertificatesServicer_to_server
        )
    ]

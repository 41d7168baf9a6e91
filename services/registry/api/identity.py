"""WhoAmI: lets other services check a caller's token through the registry."""

from __future__ import annotations

import grpc

from gatehouse.v1 import registry_pb2, registry_pb2_grpc
from services.common.auth import current_principal


class IdentityServicer(registry_pb2_grpc.IdentityServicer):
    async def WhoAmI(
        self,
        request: registry_pb2.WhoAmIRequest,
        context: grpc.aio.ServicerContext[registry_pb2.WhoAmIRequest, registry_pb2.WhoAmIResponse],
    ) -> registry_pb2.WhoAmIResponse:
        principal = current_principal()
        return registry_pb2.WhoAmIResponse(
            user=principal.user,
            system=principal.system,
            admin=principal.admin,
            projects=sorted(principal.projects),
        )

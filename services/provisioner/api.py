"""The provisioner's API: the logs of the replicas it runs."""

from __future__ import annotations

import grpc

from gatehouse.v1 import provisioner_pb2, provisioner_pb2_grpc
from services.common.auth import current_principal
from services.common.errors import NotFound
from services.provisioner.reconciler import Provisioner

DEFAULT_TAIL = 200


class ProvisionerServicer(provisioner_pb2_grpc.ProvisionerServicer):
    def __init__(self, provisioner: Provisioner) -> None:
        self._provisioner = provisioner

    async def ReplicaLogs(
        self,
        request: provisioner_pb2.ReplicaLogsRequest,
        context: grpc.aio.ServicerContext[
            provisioner_pb2.ReplicaLogsRequest, provisioner_pb2.ReplicaLogsResponse
        ],
    ) -> provisioner_pb2.ReplicaLogsResponse:
        current_principal().require_project(request.project)
        logs = self._provisioner.logs(request.project, request.service, request.tail or DEFAULT_TAIL)
        if logs is None:
            raise NotFound(f'service "{request.service}" not found in project "{request.project}"')
        return provisioner_pb2.ReplicaLogsResponse(
            replicas=[
                provisioner_pb2.ReplicaLog(replica_id=rid, lines=lines) for rid, lines in sorted(logs.items())
            ]
        )

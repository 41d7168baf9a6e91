"""`python -m services.common.health_check HOST:PORT [SERVICE]`: exits 0 when the gRPC server there
answers SERVING, else 1 with one line saying why (compose healthchecks; Kubernetes has `grpc:` probes)."""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

USAGE = "usage: python -m services.common.health_check HOST:PORT [SERVICE]"


async def unhealthy(address: str, service: str = "", timeout: float = 2.0) -> str | None:
    """None when `service` ("": the whole server) is SERVING at `address`, else why not."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            # typeshed's HealthStub declares no methods.
            answer = await health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return f"{address}: {service} is not served there"
            return f"{address}: {error.code().name.lower()}: {error.details()}"
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return f"{address}: {service or 'the server'} is {status}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    why = asyncio.run(unhealthy(args[0], args[1] if len(args) == 2 else ""))
    if why is not None:
        print(f"unhealthy: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A plaintext port answering only grpc.health.v1 with gateway_xds's own status.

The xDS port asks every client for a certificate of the internal CA, which orchestrators' probes
(Kubernetes `grpc:` probes, compose healthchecks) do not have; this port tells them whether ADS is
served, from the same health servicer, and nothing else."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2_grpc


async def start_health_port(servicer: health.aio.HealthServicer, address: str) -> grpc.aio.Server:
    # Without SO_REUSEPORT: a port another process holds is refused, not shared with it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    refused = SystemExit(
        f"error: cannot listen on {address} for health checks: the address is in use or not local"
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        raise refused from None
    if port == 0:
        raise refused
    await server.start()
    return server

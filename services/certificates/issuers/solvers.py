"""Challenge solvers: HTTP-01 answered by the gateway's own Envoy, DNS-01 through a DNS provider."""

from __future__ import annotations

from typing import Protocol

import grpc

from gatehouse import gateway_resources
from gatehouse.client.connection import Stubs
from gatehouse.v1 import registry_pb2, resources_pb2
from services.certificates.issuers.base import IssueError
from services.common.probes import http_get

PUBLISH_TIMEOUT_SECONDS = 20.0
CHALLENGE_PATH = "/.well-known/acme-challenge/"


class Http01Solver:
    """Publishes the token in the registry; gateway_xds turns it into a direct response on :80.
    The CA is asked to validate only once every Envoy of the gateway has the route, and the
    gateway has answered it to us."""

    kind = "http-01"

    def __init__(self, stubs: Stubs) -> None:
        self._stubs = stubs

    async def present(
        self, gateway: resources_pb2.Gateway, hostname: str, token: str, validation: str
    ) -> None:
        challenge = await self._stubs.tls_certificates.PutChallenge(
            resources_pb2.AcmeChallenge(
                token=token, key_authorization=validation, gateway_id=gateway.id, hostname=hostname
            )
        )
        await self._until_acked(gateway, challenge.resource_version)
        host = gateway.status.listen_address
        if host in ("", "0.0.0.0", "::"):
            host = gateway.status.hostname
        port = gateway.status.http_port or 80
        status, body = await http_get(host, port, CHALLENGE_PATH + token, timeout=5.0, host_header=hostname)
        if status != 200 or body.strip() != validation:
            raise IssueError(
                f"gateway {gateway.name} does not answer the ACME challenge for {hostname} "
                f"(GET {host}:{port}{CHALLENGE_PATH}{token} gave {status or body})"
            )

    async def _until_acked(self, gateway: resources_pb2.Gateway, revision: int) -> None:
        """Until every connected Envoy of the gateway has applied `revision`, as the registry tells
        each report of theirs (no polling)."""
        request = registry_pb2.GetRequest(project=gateway.project, name=gateway.name)
        updates = self._stubs.gateways.Follow(request, timeout=PUBLISH_TIMEOUT_SECONDS)
        try:
            async for current in updates:
                if gateway_resources.liveness(current.status.envoys, revision).live:
                    return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        finally:
            updates.cancel()
        raise IssueError(f"gateway {gateway.name}'s Envoy did not take the ACME challenge route in time")

    async def cleanup(self, gateway: resources_pb2.Gateway, hostname: str, token: str) -> None:
        await self._stubs.tls_certificates.DeleteChallenge(registry_pb2.DeleteChallengeRequest(token=token))


class DnsProvider(Protocol):
    """Sets and removes TXT records; returns once the change is visible to the CA."""

    async def set_txt(self, name: str, value: str) -> None: ...

    async def remove_txt(self, name: str, value: str) -> None: ...


def txt_name(hostname: str) -> str:
    return "_acme-challenge." + hostname.removeprefix("*.")


class Dns01Solver:
    kind = "dns-01"

    def __init__(self, provider: DnsProvider) -> None:
        self._provider = provider
        self._values: dict[str, str] = {}

    async def present(
        self, gateway: resources_pb2.Gateway, hostname: str, token: str, validation: str
    ) -> None:
        self._values[token] = validation
        await self._provider.set_txt(txt_name(hostname), validation)

    async def cleanup(self, gateway: resources_pb2.Gateway, hostname: str, token: str) -> None:
        value = self._values.pop(token, None)
        if value is not None:
            await self._provider.remove_txt(txt_name(hostname), value)

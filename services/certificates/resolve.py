"""Does a hostname resolve to its gateway? Asked before ordering, so a missing DNS record is a
plain status line instead of a failed (and rate-limited) validation."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import dns.asyncresolver
import dns.exception
import dns.resolver


class NotPointingAtGateway(Exception):
    pass


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


async def addresses(name: str, dns_server: str | None) -> set[str]:
    if dns_server is None:
        infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
        return {str(info[4][0]) for info in infos}
    host, _, port = dns_server.rpartition(":") if ":" in dns_server else (dns_server, ":", "53")
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = int(port or 53)
    resolver.lifetime = 5.0
    answer = await resolver.resolve(name, "A")
    return {record.to_text() for record in answer}


async def check_points_at(hostname: str, gateway_host: str, dns_server: str | None) -> None:
    """Raises NotPointingAtGateway with the line the service status shows."""
    try:
        expected = {gateway_host} if _is_address(gateway_host) else await addresses(gateway_host, dns_server)
    except (OSError, dns.exception.DNSException) as error:
        raise NotPointingAtGateway(
            f"the gateway's name {gateway_host} does not resolve ({type(error).__name__})"
        ) from None
    try:
        found = await addresses(hostname, dns_server)
    except (OSError, dns.exception.DNSException) as error:
        raise NotPointingAtGateway(
            f"{hostname} does not resolve ({type(error).__name__}): add the wildcard record for the gateway"
        ) from None
    if not found & expected:
        shown = ", ".join(sorted(found))
        raise NotPointingAtGateway(
            f"{hostname} resolves to {shown}, not to gateway {gateway_host}: add the wildcard record"
        )
